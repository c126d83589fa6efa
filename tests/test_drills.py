"""The outage drill, short, in CI: edge-ai in gateway mode under concurrent clients of both dialects
while the fake cloud fails and recovers. Zero client-visible failures; the breaker opens and closes."""

from __future__ import annotations

import pytest

from edge_ai.drill import run_drill


@pytest.mark.parametrize("failure", ["status", "cut"])
def test_an_outage_under_load_is_invisible_to_clients(failure):
    report = run_drill(failure=failure, code=529, phase_s=3.0, clients=12, max_tokens=8)
    assert report.failures == 0, report.errors[:3]
    assert report.breaker_open_s is not None and report.recover_s is not None
    assert report.by_phase["outage"]["cache"] + report.by_phase["outage"].get("local", 0) > 0
    assert report.by_phase["recovery"]["cloud"] > 0
