"""bench/history.py cannot rot: a day of 1 Hz telemetry through the whole bench prints every window and a ratio.

The bench starts its own mosquitto and influxd (deploy/stack.py, free ports), so this needs the binaries, not
the suite's servers. The browser is left out (``--no-browser``): the page load is bench/dashboard.py's and the
browser tests' business, and Chromium would double the time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import stack

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"(\d[\d,]*\.?\d*|nan)"


@pytest.mark.integration
@pytest.mark.skipif(not (stack.find_binary("mosquitto") and stack.find_binary("influxd")),
                    reason="mosquitto and influxd are needed")
def test_history_bench_prints_every_window_and_its_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "history.py"), "--scenario", "year1hz", "--days", "1", "--runs", "1",
         "--no-browser"],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "loaded 86,400 telemetry points in" in out
    assert re.search(r"on disk \d+\.\d (KiB|MiB)", out)
    for label in ("24 h", "7 d", "30 d", "1 y"):
        row = re.search(rf"^\s*{label}\s+(\S+)" + rf"\s+{NUMBER}" * 11, out, re.MULTILINE)
        assert row is not None, f"no row for {label}:\n{out}"
        kpi_cold, _warm, build, history, rows, raw, ratio, _page, _figs, _plotly, _again, drawn = row.groups()
        assert float(kpi_cold) > 0, f"the KPIs of {label} never became exact: {kpi_cold}"
        assert float(build) > 0
        assert float(history) > 0
        assert float(raw) > 0
        assert float(ratio) > 0
        assert int(rows.replace(",", "")) > 0
        assert int(drawn.replace(",", "")) > 0, f"the {label} window drew no SOC points"
    targets = re.search(r"^targets: (.*)$", out, re.MULTILINE)
    assert targets is not None
    assert len(re.findall(r"build \d+\.\d+ s (?:met|NOT met)", targets.group(1))) == 4  # a verdict per window
