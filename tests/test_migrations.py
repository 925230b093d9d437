"""Schema migrations: numbered steps, run once each, in their order."""

from __future__ import annotations

from app.platform.migrations import STEPS, applied_versions


def test_the_steps_are_numbered_in_the_order_they_run():
    numbers = [number for number, _, _ in STEPS]
    assert numbers == sorted(set(numbers)), "a step is out of order or numbered twice"


def test_a_new_database_records_every_step_once(services):
    assert applied_versions() == {number for number, _, _ in STEPS}
