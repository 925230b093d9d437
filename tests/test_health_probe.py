"""The API's background probes: they can be stopped, and a stopped probe
leaves no check running (its owner may close the connections it uses)."""

from __future__ import annotations

import threading

from app.platform.health import Probe, stop_all


def test_a_stopped_probe_waits_for_its_check_and_runs_no_more():
    started, release, calls = threading.Event(), threading.Event(), []

    def check():
        calls.append(1)
        started.set()
        release.wait(5)  # a check under way when stop() is called

    probe = Probe("test", check, interval=0.01, timeout=5)
    probe.state()  # starts its thread
    assert started.wait(5)
    stopper = threading.Thread(target=probe.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop() returned while a check was still using the connection"
    release.set()
    stopper.join(5)
    assert not stopper.is_alive() and not probe._thread.is_alive()
    seen = len(calls)
    probe.state()  # asking again does not start it again
    release.wait(0.1)
    assert len(calls) == seen


def test_stop_all_ends_every_running_probe():
    probes = [Probe(f"p{i}", lambda: None, interval=0.01, timeout=1) for i in range(3)]
    for p in probes:
        p.state(wait=1)
    stop_all()
    assert all(not p._thread.is_alive() for p in probes)
