"""``python -m nodes.market parse``: the provider's slots on stdout, exit 2 with one line for bad documents."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nodes.market.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "market"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit status (argparse's own SystemExit included), stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_nordpool_slots_are_exactly_the_documents(capsys: pytest.CaptureFixture[str]) -> None:
    name = FIXTURES / "nordpool_se3_2025-10-26_sek_dst_100.json"
    code, out, err = run(capsys, "--source", "nordpool", "--zone", "se3", str(name))
    assert (code, err) == (0, "")
    doc = json.loads(name.read_text())
    printed = json.loads(out)
    assert printed["zone"] == "se3"
    assert printed["currency"] == doc["currency"] == "SEK"
    assert printed["issued_at"] == "2025-10-25T11:01:27.441771Z"
    expected = [
        {"start": e["deliveryStart"], "end": e["deliveryEnd"], "price_per_mwh": e["entryPerArea"]["SE3"]}
        for e in doc["multiAreaEntries"]
    ]
    assert printed["slots"] == expected


def test_awattar_and_energy_charts_slots_are_exactly_the_documents(capsys: pytest.CaptureFixture[str]) -> None:
    name = FIXTURES / "awattar_de_lu_2023-07-02.json"
    code, out, _ = run(capsys, "--source", "awattar", "--zone", "de-lu", str(name))
    assert code == 0
    expected = [
        {"start": z(datetime.fromtimestamp(e["start_timestamp"] / 1000, UTC)),
         "end": z(datetime.fromtimestamp(e["end_timestamp"] / 1000, UTC)), "price_per_mwh": e["marketprice"]}
        for e in json.loads(name.read_text())["data"]
    ]  # fmt: skip
    assert json.loads(out)["slots"] == expected

    name = FIXTURES / "energy_charts_de_lu_2025-10-26_dst_100.json"
    code, out, _ = run(capsys, "--source", "energy-charts", "--zone", "de-lu", str(name))
    assert code == 0
    doc = json.loads(name.read_text())
    expected = [
        {"start": z(datetime.fromtimestamp(t, UTC)), "end": z(datetime.fromtimestamp(t + 900, UTC)), "price_per_mwh": p}
        for t, p in zip(doc["unix_seconds"], doc["price"], strict=True)
        if p is not None
    ]
    assert json.loads(out)["slots"] == expected


def test_entsoe_prints_96_slots_and_the_document_time(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--source", "entsoe", "--zone", "de-lu",
                       str(FIXTURES / "entsoe_de_lu_2025-10-15_a03_two_auctions.xml"))  # fmt: skip
    assert code == 0
    printed = json.loads(out)
    assert printed["issued_at"] == "2025-10-14T10:58:31Z"
    assert len(printed["slots"]) == 96
    assert printed["slots"][40] == {
        "start": "2025-10-15T08:00:00Z",
        "end": "2025-10-15T08:15:00Z",
        "price_per_mwh": -500.0,
    }


def test_eds_and_aemo_currencies(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--source", "energidataservice", "--zone", "dk2", "--currency", "DKK",
                       str(FIXTURES / "eds_dayaheadprices_2025-10-01.json"))  # fmt: skip
    assert (code, json.loads(out)["currency"]) == (0, "DKK")
    code, out, _ = run(capsys, "--source", "aemo", "--zone", "nsw1", str(FIXTURES / "aemo_report_5min_2025-01-15.json"))
    printed = json.loads(out)
    assert (code, printed["currency"]) == (0, "AUD")
    assert printed["slots"][0] == {
        "start": "2025-01-15T00:00:00Z",
        "end": "2025-01-15T00:05:00Z",
        "price_per_mwh": 85.0,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "entsoe", "--zone", "de-lu", "entsoe_ack_no_data.xml"], "No matching data found"),
        (["--source", "entsoe", "--zone", "nl", "entsoe_invalid_position0.xml"], "position 0 outside"),
        (["--source", "nordpool", "--zone", "dk1", "nordpool_not_yet_published.json"], "not yet published"),
        (["--source", "energy-charts", "--zone", "de-lu", "entsoe_ack_no_data.xml"], "not JSON"),
        (["--source", "entsoe", "--zone", "xx", "entsoe_ack_no_data.xml"], "unknown zone 'xx'"),
        (["--source", "awattar", "--zone", "fr", "awattar_de_lu_2023-07-02.json"], "awattar has no prices for zone fr"),
        (["--source", "entsoe", "--zone", "de-lu", "missing.xml"], "cannot read"),
        (["--source", "octopus", "--zone", "de-lu", "x"], "invalid choice"),
        (["--zone", "de-lu", "x"], "required: --source"),
    ],
)
def test_bad_documents_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(FIXTURES)
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err


def test_module_entry_point(tmp_path: Path) -> None:
    """The real command line: exit codes, stdout JSON, stderr one line; no arguments still means the feed."""
    ok = subprocess.run(
        [sys.executable, "-m", "nodes.market", "parse", "--source", "aemo", "--zone", "nsw1",
         str(FIXTURES / "aemo_dispatchis_2025-01-15.csv")],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert [s["price_per_mwh"] for s in json.loads(ok.stdout)["slots"]] == [95.1, -45.5, 17500.0]
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    bad = subprocess.run(
        [sys.executable, "-m", "nodes.market", "parse", "--source", "entsoe", "--zone", "de-lu", str(empty)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1
    assert "not XML" in bad.stderr
    wrong = subprocess.run([sys.executable, "-m", "nodes.market", "serve"], capture_output=True, text=True,
                           cwd=ROOT, timeout=60, check=False)  # fmt: skip
    assert wrong.returncode == 2
    assert "usage" in wrong.stderr
