"""The API's /metrics under gunicorn: every worker's counts, summed once."""

from __future__ import annotations

import os
import runpy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from tests.monitoring_helpers import scraped

ROUTE = "/v1/signing-key"
SCHEDULER_ONLY = ("mosis_storage_up", "mosis_validation_queue_depth", "mosis_cost_estimate_usd",
                  "mosis_edge_requests_total", "mosis_storage_budget_bytes")


def route_count(text: str) -> float:
    return scraped(text, "flask_http_request_duration_seconds_count", url_rule=ROUTE)


def counts_by_process(multiproc_dir: Path) -> dict[int, float]:
    """The route's request count as each process's own metrics file holds it."""
    out = {}
    for path in multiproc_dir.glob("histogram_*.db"):
        total = 0.0
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            # Files hold per-bucket (not cumulative) counts: they add up to the count.
            if key.startswith('["flask_http_request_duration_seconds", "flask_http_request_duration_seconds_bucket"') \
                    and ROUTE in key:
                total += value
        out[int(path.stem.split("_")[-1])] = total
    return out


def _get(url: str) -> int:
    # A new connection per request, so the kernel hands them to any worker.
    return requests.get(url, timeout=10, headers={"Connection": "close"}).status_code


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_sum_all_workers(live_stack):
    multiproc = Path(live_stack.env["PROMETHEUS_MULTIPROC_DIR"])
    sent = 0
    with ThreadPoolExecutor(16) as pool:
        for _ in range(20):  # until two workers have served some
            statuses = list(pool.map(_get, [live_stack.url + ROUTE] * 32))
            assert statuses == [200] * 32
            sent += 32
            serving = [pid for pid, n in counts_by_process(multiproc).items() if n > 0]
            if len(serving) >= 2:
                break
    assert len(serving) >= 2, f"requests all went to one worker: {counts_by_process(multiproc)}"
    assert live_stack.api.proc.pid not in serving  # the master serves no requests

    # Whichever worker answers /metrics, it reports every worker's requests.
    for _ in range(6):
        text = requests.get(live_stack.url + "/metrics", timeout=10, headers={"Connection": "close"}).text
        assert route_count(text) == sent
        assert not [name for name in SCHEDULER_ONLY if name in text]


def test_gunicorn_config_empties_the_metrics_dir_once(tmp_path, monkeypatch, repo_root):
    stale = tmp_path / "counter_4242.db"
    stale.write_bytes(b"x" * 16)
    keep = tmp_path / "README"
    keep.write_text("not a metrics file")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delenv("MOSIS_MULTIPROC_CLEARED", raising=False)
    conf = str(repo_root / "app" / "gunicorn_conf.py")
    runpy.run_path(conf)
    assert not stale.exists() and keep.exists()
    assert os.environ["MOSIS_MULTIPROC_CLEARED"] == str(os.getpid())
    # gunicorn reads its config again on SIGHUP: the live workers' files stay.
    stale.write_bytes(b"x" * 16)
    runpy.run_path(conf)
    assert stale.exists()


def test_the_scheduler_keeps_its_metrics_in_memory_whatever_the_environment(tmp_path, repo_root):
    import subprocess
    import sys

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    out = subprocess.run([sys.executable, "-c", "import app.scheduler, prometheus_client.values as v; "
                          "print(v.ValueClass.__name__)"],
                         cwd=repo_root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MutexValue"
