"""Renderer figures and the series they are built from: traces, units, empty states, correlation, wire form."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np
import plotly.graph_objects as go
import pytest

from nodes.contract.messages import (
    BatterySpec,
    Figure,
    HistoryResult,
    PriceForecast,
    PriceSlot,
    Schedule,
    ScheduleSlot,
    Telemetry,
)
from nodes.contract.topics import FIGURE
from nodes.renderer import figures as rf
from nodes.renderer.insights import compute_insights
from nodes.renderer.series import PriceSeries, TelemetrySeries, downsample, parse_times

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
SPEC = BatterySpec(
    capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=950.0, max_charge_kw=250.0, max_discharge_kw=250.0
)


def telemetry(n: int = 8, step: timedelta = timedelta(minutes=5)) -> TelemetrySeries:
    """Measured power alternating +75 / -50 kW every ``step`` (short enough to hold: 15 min at most)."""
    return TelemetrySeries.from_telemetry(
        Telemetry(ts=T0 + i * step, soc_kwh=500.0 + 10 * i, power_kw=(-50.0 if i % 2 else 75.0)) for i in range(n)
    )


def schedule() -> Schedule:
    return Schedule(
        plan_id="p-1",
        created_at=T0,
        soc_initial_kwh=500.0,
        slots=[
            ScheduleSlot(
                start=T0, end=T0 + H, price_per_mwh=42.5, charge_kw=250.0, discharge_kw=0.0, soc_kwh=737.2
            ),
            ScheduleSlot(
                start=T0 + H, end=T0 + 2 * H, price_per_mwh=80.0, charge_kw=0.0, discharge_kw=0.0, soc_kwh=737.2
            ),
            ScheduleSlot(
                start=T0 + 2 * H,
                end=T0 + 3 * H,
                price_per_mwh=131.0,
                charge_kw=0.0,
                discharge_kw=250.0,
                soc_kwh=500.0,
            ),
        ],
        expected_revenue=22.13,
        baseline_revenue=18.0,
        solver="HiGHS",
        solve_ms=31.0,
    )


def prices() -> PriceSeries:
    return PriceSeries.from_schedule(schedule())


def names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data]


def empty_state(fig: go.Figure) -> str | None:
    for annotation in fig.layout.annotations:
        if annotation.name == rf.EMPTY_STATE_NAME:
            return str(annotation.text)
    return None


def axis_title(axis: Any) -> str:
    return str(axis.title.text)


# -- series ----------------------------------------------------------------------------------------------


def test_telemetry_series_from_messages_sorts_dedups_and_keeps_missing_as_nan() -> None:
    series = TelemetrySeries.from_telemetry(
        [
            Telemetry(ts=T0 + H, soc_kwh=2.0, power_kw=None),
            Telemetry(ts=T0, soc_kwh=1.0, power_kw=-5.0),
            Telemetry(ts=T0 + H, soc_kwh=3.0, power_kw=7.0),  # same ts: the later message wins
        ]
    )
    assert series.times == [T0, T0 + H]
    assert series.soc_kwh.tolist() == [1.0, 3.0]
    assert series.power_kw.tolist() == [-5.0, 7.0]
    assert np.isnan(series.target_charge_kw).all()
    assert series.last_time == T0 + H


def test_telemetry_series_from_history_by_column_name_with_nulls() -> None:
    result = HistoryResult(
        ok=True,
        columns=["time", "power_kw", "soc_kwh"],  # order differs from TELEMETRY_COLUMNS on purpose
        rows=[["2025-01-16T10:00:00Z", -50.0, 700.0], ["2025-01-16T10:01:00Z", None, 699.0]],
    )
    series = TelemetrySeries.from_history(result)
    assert series.times == [T0, T0 + timedelta(minutes=1)]
    assert series.soc_kwh.tolist() == [700.0, 699.0]
    assert series.power_kw[0] == -50.0
    assert math.isnan(series.power_kw[1])
    assert np.isnan(series.target_discharge_kw).all()


def test_telemetry_series_from_history_errors() -> None:
    with pytest.raises(ValueError, match="no 'time' column"):
        TelemetrySeries.from_history(HistoryResult(ok=True, columns=["soc_kwh"], rows=[[1.0]]))
    with pytest.raises(ValueError, match="influx down"):
        TelemetrySeries.from_history(HistoryResult(ok=False, error="influx down"))
    assert len(TelemetrySeries.from_history(HistoryResult(ok=True, columns=["time", "soc_kwh"]))) == 0


def test_parse_times_accepts_offsets_and_rejects_garbage_as_nan() -> None:
    parsed = parse_times(["2025-01-16T11:00:00+01:00", "2025-01-16T10:00:00Z", "nope", None])
    assert parsed[0] == parsed[1] == T0.timestamp()
    assert np.isnan(parsed[2:]).all()
    fast = parse_times(["2025-01-16T10:00:00.5Z", "2025-01-16T10:00:01Z"])
    assert fast.tolist() == [T0.timestamp() + 0.5, T0.timestamp() + 1.0]


def test_price_series_from_forecast_and_history() -> None:
    forecast = PriceForecast(
        zone="de-lu",
        issued_at=T0,
        slots=[
            PriceSlot(start=T0 + H, end=T0 + 2 * H, price_per_mwh=131.0),
            PriceSlot(start=T0, end=T0 + H, price_per_mwh=42.5),
        ],
    )
    series = PriceSeries.from_forecast(forecast)
    assert series.price_per_mwh.tolist() == [42.5, 131.0]
    t = np.array([T0.timestamp() - 1, T0.timestamp(), (T0 + 1.5 * H).timestamp(), (T0 + 2 * H).timestamp()])
    price = series.price_at(t)
    assert np.isnan(price[0])
    assert np.isnan(price[3])
    assert price[1:3].tolist() == [42.5, 131.0]

    history = PriceSeries.from_history(
        HistoryResult(
            ok=True,
            columns=["time", "price_per_mwh"],
            rows=[
                ["2025-01-16T10:00:00Z", 1.0],
                ["2025-01-16T11:00:00Z", 2.0],
                ["2025-01-16T12:00:00Z", None],  # no price: dropped
                ["2025-01-16T14:00:00Z", 3.0],
            ],
        )
    )
    # Each slot ends at the next start but lasts at most the median spacing (1 h): 12-14 h stays a gap.
    assert (history.end_s - history.start_s).tolist() == [3600.0, 3600.0, 3600.0]
    assert (
        PriceSeries.from_history(
            history_result := HistoryResult(
                ok=True, columns=["time", "price_per_mwh"], rows=[["2025-01-16T10:00:00Z", 1.0]]
            )
        ).end_s[0]
        == T0.timestamp() + 3600.0
    )
    assert history_result.ok
    merged = history.merge(series)  # the newer forecast wins on the same start
    assert merged.price_per_mwh.tolist() == [42.5, 131.0, 3.0]


def test_downsample_bucket_means() -> None:
    t = np.arange(1000, dtype=np.float64) * 60.0
    power = np.where(np.arange(1000) % 2 == 0, 10.0, np.nan)
    series = TelemetrySeries.from_arrays(t, np.arange(1000, dtype=np.float64), power)
    small = downsample(series, 100)
    assert len(small) == 100
    assert small.soc_kwh[0] == pytest.approx(4.5)  # mean of 0..9
    assert small.time_s[0] == pytest.approx(270.0)  # mean time of the bucket
    assert np.allclose(small.power_kw, 10.0)  # NaN-aware
    assert downsample(series, 5000) is series
    with pytest.raises(ValueError, match="max_points"):
        downsample(series, 0)
    hourly = PriceSeries.from_arrays(np.arange(48) * 3600.0, np.arange(1, 49) * 3600.0, np.arange(48.0))
    daily = downsample(hourly, 2)
    assert daily.price_per_mwh.tolist() == [11.5, 35.5]
    assert daily.end_s.tolist() == [86400.0, 172800.0]


# -- figures ---------------------------------------------------------------------------------------------


def test_soc_figure_actual_planned_and_limits() -> None:
    fig = rf.soc_figure(telemetry(), schedule(), SPEC, now=T0 + H)
    assert names(fig) == ["actual SOC", "planned SOC"]
    actual, planned = fig.data
    assert len(actual.x) == 8
    assert "kWh" in actual.hovertemplate
    assert "%" in actual.hovertemplate
    assert planned.line.dash == "dash"
    # The plan starts at the initial SOC and then follows each slot's end.
    assert list(planned.y) == [500.0, 737.2, 737.2, 500.0]
    assert axis_title(fig.layout.yaxis) == "SOC (kWh)"
    assert axis_title(fig.layout.xaxis) == "time (UTC)"
    assert list(fig.layout.yaxis.range) == [0, pytest.approx(1030.0)]
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert {(s.y0, s.y1) for s in bands} == {(0, 100.0), (950.0, 1000.0)}
    assert any(s.name == "now" for s in fig.layout.shapes)
    assert fig.layout.uirevision == "soc"
    assert fig.layout.meta["last_ts"] == "2025-01-16T10:35:00Z"
    assert empty_state(fig) is None


def test_power_figure_bars_by_sign_and_plan() -> None:
    fig = rf.power_figure(telemetry(), schedule())
    assert names(fig) == ["discharge (actual)", "charge (actual)", "plan (net)"]
    discharge, charge, plan = fig.data
    assert all(v > 0 for v in discharge.y)
    assert len(discharge.y) == 4
    assert all(v < 0 for v in charge.y)
    assert len(charge.y) == 4
    assert discharge.marker.color != charge.marker.color
    assert "kW" in discharge.hovertemplate
    assert "kW" in plan.hovertemplate
    assert plan.line.shape == "hv"
    assert list(plan.y) == [-250.0, 0.0, 250.0, 250.0]  # one closing point at the end of the last slot
    assert fig.layout.barmode == "relative"
    assert "kW" in axis_title(fig.layout.yaxis)


def test_power_figure_draws_the_targets() -> None:
    series = TelemetrySeries.from_telemetry(
        [
            Telemetry(ts=T0, soc_kwh=1.0, power_kw=-10.0, target_charge_kw=10.0),
            Telemetry(ts=T0 + H, soc_kwh=1.0, power_kw=5.0, target_discharge_kw=5.0),
        ]
    )
    fig = rf.power_figure(series)
    # targets in the chart's sign convention: a charge target is drawn below zero
    charge = next(t for t in fig.data if t.name == "target charge (kW)")
    discharge = next(t for t in fig.data if t.name == "target discharge (kW)")
    assert next(iter(charge.y)) == -10.0
    assert math.isnan(list(charge.y)[1])
    assert list(discharge.y)[1] == 5.0
    assert charge.visible is None  # shown, not hidden in the legend


def test_prices_figure_two_axes_and_correlation_in_title() -> None:
    tel = TelemetrySeries.from_telemetry(
        Telemetry(ts=T0 + i * timedelta(minutes=30), soc_kwh=500.0, power_kw=p)
        for i, p in enumerate([-200.0, -100.0, 0.0, 20.0, 150.0, 250.0])
    )
    fig = rf.prices_figure(prices(), tel, schedule())
    assert names(fig) == ["price", "net power (actual)", "net power (plan)"]
    assert [t.yaxis for t in fig.data] == [None, "y2", "y2"]
    assert axis_title(fig.layout.yaxis) == "price (€/MWh)"
    assert "kW" in axis_title(fig.layout.yaxis2)
    assert fig.layout.yaxis2.overlaying == "y"
    assert "€/MWh" in fig.data[0].hovertemplate
    r = rf.price_power_correlation(prices(), tel)
    assert r == pytest.approx(float(np.corrcoef([42.5, 80.0, 131.0], [-150.0, 10.0, 200.0])[0, 1]))
    # said in words, not as "r = n/a": the question, the answer, the number and what it is based on
    assert f"Sells when prices are high? yes: correlation {r:+.2f} over 3 price slots" in fig.layout.title.subtitle.text
    assert "the plan: +" in fig.layout.title.subtitle.text
    info = next(a for a in fig.layout.annotations if a.name == "info")
    assert "Pearson" in info.hovertext  # the tooltip says how it is computed


def test_steps_break_at_gaps() -> None:
    start = np.array([0.0, 3600.0, 3 * 3600.0])
    end = np.array([3600.0, 7200.0, 4 * 3600.0])
    x, y = rf.look.steps(start, end, np.array([1.0, 2.0, 3.0]))
    assert y[:3].tolist() == [1.0, 2.0, 2.0]
    assert math.isnan(y[3])
    assert y[4:].tolist() == [3.0, 3.0]
    assert x[-1] == np.datetime64(4 * 3600, "s")


@pytest.mark.parametrize(
    ("figure", "message"),
    [
        (lambda: rf.soc_figure(TelemetrySeries.empty()), rf.WAITING_TELEMETRY),
        (lambda: rf.power_figure(TelemetrySeries.empty()), rf.WAITING_TELEMETRY),
        (lambda: rf.prices_figure(PriceSeries.empty(), TelemetrySeries.empty()), "waiting for prices · waiting for"),
        (lambda: rf.schedule_figure(None), rf.WAITING_SCHEDULE),
        (lambda: rf.insights_figure(None), rf.WAITING_TELEMETRY),
    ],
)
def test_empty_state_is_an_annotation_not_an_error(figure: Any, message: str) -> None:
    fig = figure()
    text = empty_state(fig)
    assert text is not None
    assert text.startswith(message)
    assert len(fig.data) == 0
    assert fig.layout.meta["points"] == 0
    assert axis_title(fig.layout.yaxis)  # the units are still there
    assert fig.layout.xaxis.showticklabels is False  # but no placeholder range
    msg = rf.to_message(fig, fig.layout.meta["figure"], "b1", T0)
    assert msg.data == []


def test_plan_without_telemetry_still_drawn_with_waiting_note() -> None:
    fig = rf.soc_figure(TelemetrySeries.empty(), schedule(), SPEC)
    assert names(fig) == ["planned SOC"]
    assert empty_state(fig) == rf.WAITING_TELEMETRY


def test_every_figure_has_template_uirevision_units_and_meta() -> None:
    tel = telemetry()
    ins = compute_insights(tel, prices(), SPEC, schedule())
    figs = rf.render_all(tel, prices(), schedule(), SPEC, ins, now=T0)
    assert list(figs) == list(rf.FIGURE_IDS)
    for figure_id, fig in figs.items():
        assert fig.layout.uirevision == figure_id
        assert fig.layout.template.layout.font.family == rf.FONT
        assert fig.layout.meta["figure"] == figure_id
        assert fig.layout.meta["points"] == sum(rf.trace_points(t) for t in fig.to_plotly_json()["data"])
        for trace in fig.data:
            is_text = trace.type == "scatter" and trace.mode == "text"
            if trace.type in {"scatter", "scattergl", "bar"} and not is_text:
                assert any(unit in trace.hovertemplate for unit in ("kW", "kWh", "€/MWh")), trace.name
            if is_text:  # the KPI texts: each says how it is computed
                assert all(len(h) > 20 for h in trace.hovertext), trace.name
        for axis_name in ("yaxis", "yaxis2", "yaxis3"):
            axis = getattr(fig.layout, axis_name, None)
            if axis is not None and axis.title.text:
                assert "(" in axis.title.text, f"{figure_id}.{axis_name} has no unit"
    assert rf.soc_figure(tel, uirevision="b1:7d").layout.uirevision == "b1:7d"


def test_large_series_switch_to_webgl() -> None:
    t = np.arange(25_000, dtype=np.float64) * 60.0
    big = TelemetrySeries.from_arrays(t, np.full(t.size, 5.0), np.zeros(t.size))
    assert rf.soc_figure(big).data[0].type == "scattergl"
    assert rf.soc_figure(downsample(big, 2000)).data[0].type == "scatter"


# -- correlation -------------------------------------------------------------------------------------------


def slots_and_power(
    price: list[float], power_per_slot: list[list[float | None]]
) -> tuple[PriceSeries, TelemetrySeries]:
    """Hourly price slots and power samples spread evenly inside each slot."""
    series = PriceSeries.from_arrays(
        [i * 3600.0 for i in range(len(price))], [(i + 1) * 3600.0 for i in range(len(price))], price
    )
    times, powers = [], []
    for i, samples in enumerate(power_per_slot):
        for j, p in enumerate(samples):
            times.append(i * 3600.0 + j * 3600.0 / len(samples))
            powers.append(p)
    return series, TelemetrySeries.from_arrays(times, [0.0] * len(times), np.array(powers, dtype=np.float64))


def test_correlation_perfect_positive_and_negative() -> None:
    price = [10.0, 20.0, 30.0, 40.0]
    up = slots_and_power(price, [[-100.0], [-50.0], [0.0], [50.0]])
    assert rf.price_power_correlation(*up) == pytest.approx(1.0)
    down = slots_and_power(price, [[90.0], [60.0], [30.0], [0.0]])
    assert rf.price_power_correlation(*down) == pytest.approx(-1.0)


def test_correlation_aligns_on_slots_by_mean_power() -> None:
    # Slot means are 0, 10, 20 (the None sample is ignored): perfectly correlated with the price.
    pair = slots_and_power([1.0, 2.0, 3.0], [[-10.0, 10.0], [10.0, None, 10.0], [15.0, 25.0]])
    assert rf.price_power_correlation(*pair) == pytest.approx(1.0)
    # Telemetry outside every slot does not count.
    series, tel = pair
    outside = TelemetrySeries.from_arrays([-7200.0, 99_999.0], [0.0, 0.0], [1e6, -1e6])
    assert rf.price_power_correlation(series, tel.concat(outside)) == pytest.approx(1.0)


def test_correlation_none_cases() -> None:
    assert rf.price_power_correlation(*slots_and_power([1.0, 2.0], [[1.0], [2.0]])) is None  # < 3 slots
    assert rf.price_power_correlation(*slots_and_power([1.0, 2.0, 3.0], [[5.0], [5.0], [5.0]])) is None
    assert rf.price_power_correlation(*slots_and_power([7.0, 7.0, 7.0], [[1.0], [2.0], [3.0]])) is None
    assert rf.price_power_correlation(PriceSeries.empty(), telemetry()) is None
    assert rf.price_power_correlation(prices(), TelemetrySeries.empty()) is None
    # Three slots, but telemetry only in two of them.
    assert rf.price_power_correlation(*slots_and_power([1.0, 2.0, 3.0], [[1.0], [2.0], []])) is None


def test_plan_price_correlation() -> None:
    assert rf.plan_price_correlation(schedule()) == pytest.approx(
        float(np.corrcoef([42.5, 80.0, 131.0], [-250.0, 0.0, 250.0])[0, 1])
    )


# -- schedule and insights figures -----------------------------------------------------------------------


def test_schedule_table_contents() -> None:
    table = rf.schedule_table(schedule())
    assert table == {
        "slot (UTC)": ["01-16 10:00–11:00", "01-16 11:00–12:00", "01-16 12:00–13:00"],
        "price (€/MWh)": ["42.50", "80.00", "131.00"],
        "action": ["charge", "idle", "discharge"],
        "power (kW)": ["-250.0", "0.0", "250.0"],
        "SOC at end (kWh)": ["737.2", "737.2", "500.0"],
    }


def test_schedule_figure_chart_and_table() -> None:
    fig = rf.schedule_figure(schedule(), now=T0 + H)
    assert [t.type for t in fig.data] == ["scatter", "bar", "bar", "scatter", "table"]
    price, discharge, charge, soc, table = fig.data
    assert list(discharge.y) == [250.0]
    assert list(charge.y) == [-250.0]
    assert list(discharge.width) == [3600_000.0]
    assert soc.yaxis == "y3"
    assert discharge.yaxis == "y2"
    assert "€/MWh" in price.hovertemplate
    assert [h.replace("<b>", "").replace("</b>", "") for h in table.header.values] == list(
        rf.schedule_table(schedule())
    )
    assert list(table.cells.values[2]) == ["charge", "idle", "discharge"]
    # operator words in the title; the internals (id, solver, solve time) in the small details line
    assert "expected revenue €22.13" in fig.layout.title.text
    assert "simple rule: €18.00" in fig.layout.title.text
    assert "p-1" not in fig.layout.title.text
    assert "HiGHS" not in fig.layout.title.text
    details = next(a.text for a in fig.layout.annotations if a.name == "details")
    assert "plan p-1" in details
    assert "solver HiGHS, 31 ms" in details
    tips = {a.text: a.hovertext for a in fig.layout.annotations if a.name == "info"}
    assert "cheapest" in tips["simple rule?"]  # what the baseline is
    assert axis_title(fig.layout.yaxis3) == "SOC (kWh)"
    assert axis_title(fig.layout.xaxis2) == "time (UTC)"
    assert len([s for s in fig.layout.shapes if s.name == "now"]) == 2


def test_insights_figure_numbers_with_how_they_are_computed() -> None:
    tel = telemetry()
    ins = compute_insights(tel, prices(), SPEC, schedule())
    fig = rf.insights_figure(ins)
    texts = {t.name: t for t in fig.data}
    assert list(texts["headline"].text) == [
        f"<b>{rf.look.money(ins.realised_revenue)}</b>",
        f"<b>{rf.look.money(ins.plan_revenue_to_date)}</b>",
        f"<b>{ins.full_cycles:.2f}</b>",
        f"<b>{ins.spread_per_mwh:,.2f}</b>",  # the unit is in its label
    ]
    labels = [label for t in fig.data if t.name == "metric" for label in t.text]
    values = [value for t in fig.data if t.name == "value" for value in t.text]
    hovers = [h for t in fig.data if t.name == "value" for h in t.hovertext]
    assert "realised revenue" in labels
    assert "simple rule (whole plan)" in labels  # the baseline says what it is
    assert "€22.13" in values
    assert len(labels) == len(values) == len(hovers) == len(rf.insights_rows(ins)) - 1
    assert all(len(h) > 20 for h in hovers)  # every number says how it is computed
    assert "2025-01-16 10:00 → 2025-01-16 10:35 UTC" in fig.layout.title.subtitle.text
    assert empty_state(fig) is None
    assert "plan p-1" in fig.layout.annotations[0].text  # the plan id only in the small details line
    # No telemetry behind it: say what is missing instead of zeros.
    blank = compute_insights(TelemetrySeries.empty(), prices(), None, schedule())
    assert empty_state(rf.insights_figure(blank)) == rf.WAITING_TELEMETRY
    # Still being computed, or not computable: said so, no numbers.
    from nodes.renderer.insights import pending

    waiting = rf.insights_figure(pending("computing", "reading the raw history: 3 of 30 days"))
    assert empty_state(waiting) == "computing: reading the raw history: 3 of 30 days"
    assert waiting.data == ()


# -- wire form -------------------------------------------------------------------------------------------


def test_to_message_is_a_contract_figure_and_json_safe() -> None:
    series = TelemetrySeries.from_telemetry(
        [Telemetry(ts=T0, soc_kwh=500.0, power_kw=None), Telemetry(ts=T0 + H, soc_kwh=510.5, power_kw=3.0)]
    )
    fig = rf.prices_figure(prices(), series, schedule())
    msg = rf.to_message(fig, "prices", "battery-1", T0)
    payload = FIGURE.encode(msg)
    decoded = FIGURE.decode(payload)
    assert isinstance(decoded, Figure)
    assert decoded.figure == "prices"
    assert decoded.battery == "battery-1"
    assert decoded.generated_at == T0
    # Plain JSON for any consumer: strict stdlib json (no NaN), ISO times, lists not base64 typed arrays.
    text = json.dumps({"data": msg.data, "layout": msg.layout}, allow_nan=False)
    assert "bdata" not in text
    actual = next(t for t in decoded.data if t["name"] == "net power (actual)")
    # no power at 10:00 and the next reading an hour later: derived from SOC (+10.5 kWh in 1 h = -10.5 kW),
    # then the 11:00 reading's 3 kW drawn for one typical spacing (at most 15 min)
    assert actual["x"] == ["2025-01-16T10:00:00", "2025-01-16T11:00:00", "2025-01-16T11:15:00"]
    assert actual["y"] == [-10.5, 3.0, 3.0]
    assert decoded.layout["meta"]["figure"] == "prices"
    # The message rebuilds the same figure (what the dashboard's Plotly.react receives).
    rebuilt = go.Figure(data=decoded.data, layout=decoded.layout)
    assert names(rebuilt) == names(fig)


def test_to_message_round_trips_every_figure() -> None:
    tel = telemetry()
    figs = rf.render_all(tel, prices(), schedule(), SPEC, compute_insights(tel, prices(), SPEC, schedule()))
    for figure_id, fig in figs.items():
        msg = rf.to_message(fig, figure_id, "b1", T0)
        again = msgspec.json.decode(msgspec.json.encode(msg), type=Figure)
        assert again.layout["meta"]["points"] == fig.layout.meta["points"]
        assert sum(rf.trace_points(t) for t in again.data) == fig.layout.meta["points"]


def test_json_safe_values() -> None:
    value = {
        "when": datetime(2025, 1, 16, 12, 0, tzinfo=timezone(timedelta(hours=1))),
        "naive": datetime(2025, 1, 16, 10, 0),
        "scalar": np.float32(1.5),
        "int": np.int64(3),
        "nan": float("nan"),
        "ms": np.array([0, 1500], dtype="datetime64[ms]"),
        "nat": np.array(["NaT", "2025-01-16T10:00"], dtype="datetime64[s]"),
        "mixed": np.array([1, "a"], dtype=object),
        "tuple": (1, 2),
    }
    assert rf.json_safe(value) == {
        "when": "2025-01-16T11:00:00Z",
        "naive": "2025-01-16T10:00:00",
        "scalar": 1.5,
        "int": 3,
        "nan": None,
        "ms": ["1970-01-01T00:00:00.000", "1970-01-01T00:00:01.500"],
        "nat": [None, "2025-01-16T10:00:00"],
        "mixed": [1, "a"],
        "tuple": [1, 2],
    }


# -- issue 9: seed data, the view's range, honest buckets ---------------------------------------------------


def seed_only(n: int = 13, step: timedelta = timedelta(minutes=5)) -> TelemetrySeries:
    """What POST /write gives for the seed's curl lines: SOC and targets, never a power."""
    return TelemetrySeries.from_telemetry(
        Telemetry(
            ts=T0 + i * step,
            soc_kwh=500.0 + (10.0 * i if i <= 6 else 10.0 * (12 - i)),
            target_charge_kw=100.0,
            target_discharge_kw=50.0,
            source="gateway",
        )
        for i in range(n)
    )


def test_seed_battery_power_is_derived_from_soc_and_targets_are_drawn() -> None:
    # SOC rises 10 kWh every 5 min for 30 min (charging at 120 kW), then falls back (discharging at 120 kW).
    view = (T0 - H, T0 + 2 * H)
    fig = rf.power_figure(seed_only(), x_range=view)
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert set(bars) == {"charge (derived from SOC)", "discharge (derived from SOC)"}
    assert list(bars["charge (derived from SOC)"].y) == pytest.approx([-120.0] * 6)
    assert list(bars["discharge (derived from SOC)"].y) == pytest.approx([120.0] * 6)
    # each bar covers the 5 minutes between the two readings it comes from (not a millisecond)
    assert set(bars["charge (derived from SOC)"].width) == {300_000.0}
    assert "derived from SOC" in fig.layout.title.text
    lines = {t.name for t in fig.data if t.type == "scatter"}
    assert {"target charge (kW)", "target discharge (kW)"} <= lines
    # the axis is the view, whatever the data's span
    assert list(fig.layout.xaxis.range) == ["2025-01-16T09:00:00.000", "2025-01-16T12:00:00.000"]
    assert fig.layout.xaxis.autorange is False


def test_seed_battery_energy_is_derived_not_zero() -> None:
    ins = compute_insights(seed_only(), PriceSeries.empty(), SPEC)
    # 60 kWh up, 60 kWh down, from the SOC changes
    assert ins.energy_charged_kwh == pytest.approx(60.0)
    assert ins.energy_discharged_kwh == pytest.approx(60.0)
    assert ins.derived_energy_kwh == pytest.approx(120.0)
    assert ins.power_source == "derived from SOC"
    assert ins.efficiency_loss_kwh is None  # cannot be known from SOC alone, and says so
    assert "derived from SOC" in ins.loss_note
    rows = {label: (value, how) for label, value, how in rf.insights_rows(ins)}
    assert rows["energy charged"][0] == "60.0 kWh"
    assert rows["derived from SOC"][0] == "120.0 kWh"
    assert rows["lost to efficiency"] == (
        "— (not measurable)",
        "Not measurable: power is derived from SOC. " + rows["lost to efficiency"][1].split(". ", 1)[1],
    )


def test_a_sparse_battery_keeps_a_sane_axis() -> None:
    # two readings a minute apart: the axis is still the window, not a millisecond span
    tel = seed_only(n=2, step=timedelta(minutes=1))
    figs = rf.render_all(tel, PriceSeries.empty(), None, None, None, x_range=(T0 - 6 * H, T0 + H))
    for figure_id in ("soc", "power", "prices"):
        lo, hi = (np.datetime64(v) for v in figs[figure_id].layout.xaxis.range)
        assert hi - lo == np.timedelta64(7 * 3600 * 1000, "ms")


def test_the_view_is_the_window_and_plans_outside_it_are_not_drawn() -> None:
    # a window in the past (yesterday), with today's plan: the plan is not drawn, the axis is the window
    past = (T0 - 30 * H, T0 - 6 * H)
    tel = telemetry()
    figs = rf.render_all(tel, prices(), schedule(), SPEC, None, now=T0 + H, x_range=past, live=False)
    for figure_id in ("soc", "power", "prices"):
        fig = figs[figure_id]
        assert list(fig.layout.xaxis.range) == ["2025-01-15T04:00:00.000", "2025-01-16T04:00:00.000"]
        assert not any("plan" in (t.name or "") for t in fig.data), figure_id
        assert not any(s.name == "now" for s in fig.layout.shapes)  # now is not in this view
    # a view that overlaps the plan draws only the overlapping slots
    clipped = rf.clip_schedule(schedule(), T0 + 1.5 * H, T0 + 5 * H)
    assert clipped is not None
    assert [s.start for s in clipped.slots] == [T0 + H, T0 + 2 * H]


def test_bucket_means_are_drawn_over_the_bucket_they_stand_for() -> None:
    # InfluxDB stamps a mean at its bucket's start, and the first bucket starts before the query's begin.
    begin, end = T0 + timedelta(seconds=25), T0 + timedelta(seconds=180)
    result = HistoryResult(
        ok=True,
        columns=["time", "soc_kwh", "power_kw"],
        rows=[
            ["2025-01-16T10:00:00Z", 500.0, 60.0],
            ["2025-01-16T10:01:00Z", 499.0, 60.0],
            ["2025-01-16T10:02:00Z", 498.0, -30.0],
        ],
    )
    series = TelemetrySeries.from_history(result, bucket_s=60, begin_s=begin.timestamp(), end_s=end.timestamp())
    # the first bucket holds only data from 10:00:25 on: it starts there, it does not reach back before it
    assert series.time_s[0] == begin.timestamp()
    assert list(series.spans) == [35.0, 60.0, 60.0]
    soc = rf.soc_figure(series).data[0]
    assert [str(x) for x in soc.x] == [
        "2025-01-16T10:00:42.500", "2025-01-16T10:01:30.000", "2025-01-16T10:02:30.000"
    ]
    bars = {t.name: t for t in rf.power_figure(series).data if t.type == "bar"}
    assert [str(x) for x in bars["discharge (actual)"].x] == ["2025-01-16T10:00:25.000", "2025-01-16T10:01:00.000"]
    assert list(bars["discharge (actual)"].width) == [35_000.0, 60_000.0]
    assert list(bars["charge (actual)"].width) == [60_000.0]


def test_a_battery_that_is_not_planned_says_so() -> None:
    fig = rf.schedule_figure(None, note="monitored, not planned: no spec received")
    assert empty_state(fig) == "no plan: monitored, not planned: no spec received"
    assert empty_state(rf.schedule_figure(None)) == rf.WAITING_SCHEDULE
