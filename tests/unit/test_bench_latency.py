"""bench/latency.py's verdicts: percentiles, the targets line, and a starved run flagged as such."""

from __future__ import annotations

import argparse

from bench.latency import RateResult, report, targets
from bench.latency_probes import pct, summary


def _result(rate: int, dashboard_ms: list[float], queryable_ms: list[float], behind_ms: float = 5.0) -> RateResult:
    return RateResult(rate=rate, sent=100, achieved=float(rate), behind_max_ms=behind_ms, queryable_ms=queryable_ms,
                      dashboard_ms=dashboard_ms, dashboard_expected=100, query_ms=[2.0], stored=100, drained_s=0.1,
                      cpu={}, cpu_us={}, rss={}, load="1.00 1.00 1.00")


def test_percentiles_are_nearest_rank_and_say_when_nothing_arrived() -> None:
    values = [float(v) for v in range(1, 101)]
    assert pct(values, 0.5) == 51.0
    assert pct(values, 0.99) == 99.0
    assert "p50    51.0 ms  p99    99.0 ms  max   100.0 ms  (n=100)" in summary(values)
    assert "n=0" in summary([])


def test_the_targets_line_judges_the_5k_run_by_its_p99s() -> None:
    fast = [10.0] * 98 + [90.0] * 2  # nearest rank: the 99th of 100 is index 98
    slow = [10.0] * 90 + [150.0] * 10
    line = targets([_result(1000, slow, slow), _result(5000, fast, [100.0] * 99 + [600.0])])
    assert line.startswith("targets: at 5,000 msg/s publish -> dashboard p99 90.0 ms (< 100 ms: met)")
    assert "publish -> queryable p99 100.0 ms (< 500 ms: met)" in line  # p99 of 100 samples is the 99th
    assert "MISSED" in targets([_result(5000, slow, fast)])
    assert "STARVED" not in line


def test_a_starved_run_is_no_verdict_and_a_missing_rate_is_not_checked() -> None:
    assert "STARVED" in targets([_result(5000, [10.0], [10.0], behind_ms=3000.0)])
    assert targets([_result(1000, [10.0], [10.0])]).startswith("targets: not checked")


def test_a_starved_rate_says_so_right_under_its_own_header() -> None:
    args = argparse.Namespace(seconds=20.0, batteries=200, poll_ms=20.0, no_figures=False, viewers=4)
    lines = report(_result(5000, [10.0], [10.0], behind_ms=3000.0), args)
    assert lines[0].startswith("rate 5,000 msg/s")
    assert lines[1].startswith("  WARNING: the publisher fell 3000 ms behind")
    assert not any("WARNING" in line for line in report(_result(5000, [10.0], [10.0]), args))
