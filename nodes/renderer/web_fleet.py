"""The index page's fleet table as HTML (pure: fleet rows and totals in, markup out; no HTTP here).

The server writes the whole table, so the page is complete before its script runs; the script then keeps it
live (event stream), sorts it on a click and recomputes the totals with the rules of :mod:`nodes.renderer.fleet`.
Hooks for the script and browser tests: ``#fleet`` (``data-sort-key``, ``data-sort-dir``), one
``tr.battery-row#battery-{id}`` per battery with ``td[data-field]`` cells (``data-sort-value`` on each),
``#fleet-totals [data-total]``. Every header and number has a tooltip saying what it is and how it is computed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final
from urllib.parse import quote

import msgspec

from nodes.contract.messages import SEVERITIES
from nodes.renderer import fleet
from nodes.renderer.csvout import utc_text
from nodes.renderer.currency import SYMBOLS, money
from nodes.renderer.fleet import FleetRow, FleetTotals
from nodes.renderer.paging import MAX_PAGE_ROWS, FleetPage
from nodes.renderer.timezone import display_time

COLUMNS: Final = (
    ("battery", "battery", "the battery id; click for its page"),
    ("soc", "SOC", "state of charge in the latest telemetry; the bar and % are of the spec's capacity, the ticks "
                   "mark the spec's SOC limits"),
    ("power", "power", "power in the latest telemetry: + discharging, − charging"),
    ("mode", "mode", "what the battery reports doing (its state topic)"),
    ("control", "control", "who may command it now (the control topic): autopilot (the planner), manual "
                           "(operator commands only), idle; without a mode set, the planner's default"),
    ("alarms", "alarms", "alarms up now (battery/{battery}/alarm/+), the most urgent first"),
    ("revenue", "plan revenue today", fleet.REVENUE_HOW),
    ("age", "telemetry", "time since the latest telemetry (its own timestamp)"),
)
"""(sort key and ``data-field``, header, tooltip) of each column, in order."""
REVENUE_CELL: Final = "planned for today (UTC) by the current plan, not metered; the column header says how"
"""A revenue cell's tooltip: short, since it is on every row (the header carries the whole rule)."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f} {unit}".replace("-", "−")


def whole_pct(value: float) -> str:
    """A percentage without decimals, rounded half up as the page's script rounds it (``Math.round``)."""
    return str(math.floor(value + 0.5))


def _attr(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def soc_cell(row: FleetRow) -> str:
    """The SOC cell: a bar (of capacity, with the SOC limits as ticks) and the kWh and % as text."""
    pct = row.soc_pct
    text = _num(row.soc_kwh, 1, "kWh") + (f" · {whole_pct(pct)} %" if pct is not None else "")
    limits = ""
    if row.capacity_kwh and row.soc_min_kwh is not None and row.soc_max_kwh is not None:
        lo, hi = row.soc_min_kwh / row.capacity_kwh * 100, row.soc_max_kwh / row.capacity_kwh * 100
        limits = (f'<i class="tick" style="left:{lo:.1f}%"></i><i class="tick" style="left:{hi:.1f}%"></i>')
    width = 0.0 if pct is None else min(max(pct, 0.0), 100.0)
    tip = ("no telemetry yet" if row.soc_kwh is None else
           f"{row.soc_kwh:,.1f} kWh" + (f" of {row.capacity_kwh:,.0f} kWh capacity ({pct:.1f} %); limits "
                                        f"{row.soc_min_kwh:,.0f}–{row.soc_max_kwh:,.0f} kWh"
                                        if pct is not None else "; no spec received, so no % of capacity"))
    return (f'<td data-field="soc" data-sort-value="{_attr(pct if pct is not None else row.soc_kwh)}" '
            f'data-soc-kwh="{_attr(row.soc_kwh)}" data-capacity-kwh="{_attr(row.capacity_kwh)}" '
            f'data-soc-min-kwh="{_attr(row.soc_min_kwh)}" data-soc-max-kwh="{_attr(row.soc_max_kwh)}" '
            f'title="{_e(tip)}"><span class="socbar" data-empty="{"true" if pct is None else "false"}">'
            f'<span class="fill" style="width:{width:.1f}%"></span>{limits}</span>'
            f'<span class="soc-text">{_e(text)}</span></td>')


def _alarm_cell(row: FleetRow) -> str:
    severity = row.alarm_severity or "none"
    rank = SEVERITIES.index(row.alarm_severity) + 1 if row.alarm_severity else 0
    text = f"{row.alarms} alarm{'s' if row.alarms != 1 else ''}" if row.alarms else "no alarm"
    tip = ", ".join(row.alarm_rules) if row.alarm_rules else "no alarm up now"
    return (f'<td data-field="alarms" data-sort-value="{rank * 1000 + row.alarms}" title="{_e(tip)}">'
            f'<span class="chip chip-alarm" data-count="{row.alarms}" data-severity="{severity}">{text}</span></td>')


def _revenue_cell(row: FleetRow) -> str:
    if row.revenue_today is None or row.currency is None:
        return (f'<td data-field="revenue" data-sort-value="" data-value="" data-currency="" '
                f'title="{_e(row.revenue_note)}">—</td>')
    return (f'<td data-field="revenue" data-sort-value="{_attr(row.revenue_today)}" '
            f'data-value="{_attr(row.revenue_today)}" data-currency="{_e(row.currency)}" '
            f'title="{REVENUE_CELL}">{_e(money(row.revenue_today, row.currency))}</td>')


def _age_cell(row: FleetRow, zone: str) -> str:
    if row.telemetry_ts is None:
        return '<td data-field="age" data-sort-value="" data-ts="" title="no telemetry yet">none yet</td>'
    ts = utc_text(row.telemetry_ts)
    shown = display_time(row.telemetry_ts, zone)
    return (f'<td data-field="age" data-sort-value="{_attr(row.telemetry_age_s)}" data-ts="{_e(ts)}" '
            f'title="latest reading {_e(shown)}">{_e(shown)}</td>')


def row_html(row: FleetRow, zone: str) -> str:
    """One battery's row."""
    b = _e(row.battery)
    mode = row.mode or "unknown"
    control_mode = row.control_mode or "default"
    control_text = row.control.removeprefix("Control: ")
    power = row.power_kw
    power_text = "not reported" if power is None and row.telemetry_ts is not None else _num(power, 1, "kW")
    notes = "".join(
        f'<span class="row-note" data-note-node="{_e(node)}" title="reported by the {_e(node)}">'
        f"{_e(node)}: {_e(text)}</span>"
        for node, text in row.notes.items()
    )
    return (
        f'<tr class="battery-row" id="battery-{b}" data-battery="{b}" data-fresh="{str(row.fresh).lower()}">'
        f'<td data-field="battery" data-sort-value="{b}"><a href="/battery/{b}">{b}</a>{notes}</td>'
        f"{soc_cell(row)}"
        f'<td data-field="power" data-sort-value="{_attr(power)}" data-value="{_attr(power)}" '
        f'data-sign="{"" if power is None else "+" if power > 0 else "-" if power < 0 else "0"}" '
        f'title="latest telemetry: + discharging, − charging">{power_text}</td>'
        f'<td data-field="mode" data-sort-value="{_e(mode)}" title="what the battery reports doing">'
        f'<span class="chip chip-mode" data-mode="{_e(mode)}">'
        f'{_e(row.mode or "not reported")}</span></td>'
        f'<td data-field="control" data-sort-value="{_e(control_mode)}" title="{_e(row.control)}">'
        f'<span class="chip chip-control" data-control="{_e(control_mode)}">{_e(control_text)}</span></td>'
        f"{_alarm_cell(row)}{_revenue_cell(row)}{_age_cell(row, zone)}</tr>"
    )


def _revenue_total(totals: FleetTotals) -> str:
    if not totals.revenue_today:
        return "—"
    return " + ".join(money(v, code) for code, v in totals.revenue_today.items())


def totals_html(totals: FleetTotals) -> str:
    """The totals row (``tfoot``)."""
    energy = _num(totals.energy_kwh, 1, "kWh")
    if totals.energy_pct is not None:
        energy += f" · {whole_pct(totals.energy_pct)} %"
    how = totals.how
    return (
        f'<tr id="fleet-totals" class="totals">'
        f'<th scope="row" data-total="batteries" title="every battery (all pages); counted: a reading at most '
        f'{fleet.FRESH_S:g} s old">fleet · {totals.batteries} batteries, {totals.counted} counted</th>'
        f'<td data-total="energy" data-value="{_attr(totals.energy_kwh)}" title="{_e(how["energy"])}">{energy}</td>'
        f'<td data-total="power" data-value="{_attr(totals.power_kw)}" title="{_e(how["power"])}">'
        f'{_num(totals.power_kw, 1, "kW")}</td><td></td><td></td>'
        f'<td data-total="alarms" data-value="{totals.alarms}" title="{_e(how["alarms"])}">'
        f'<span class="chip chip-alarm" data-count="{totals.alarms}" '
        f'data-severity="{totals.alarm_severity or "none"}">{totals.alarms} up</span></td>'
        f'<td data-total="revenue" title="{_e(how["revenue"])}">{_e(_revenue_total(totals))}</td><td></td></tr>'
    )


def fleet_table(rows: Sequence[FleetRow], totals: FleetTotals, zone: str, now: datetime,
                page: FleetPage | None = None) -> str:
    """The fleet table (of ``page``'s rows when given; the totals are always the whole fleet's); ``now`` stamps
    the data for the script (ages count up from it). A partial page says so (``data-paged``): its script then keeps
    the server's totals and adds no rows for batteries of other pages."""
    head = "".join(
        f'<th scope="col" data-sort-key="{key}" aria-sort="none" title="{_e(tip)}">'
        f'<button type="button" class="sort">{_e(label)}</button></th>'
        for key, label, tip in COLUMNS
    )
    body = "".join(row_html(r, zone) for r in rows)
    waiting = ("no battery matches this search" if page is not None and page.query.q else
               "waiting for telemetry: no battery has reported yet")
    empty = "" if rows else f'<tr id="no-batteries"><td colspan="8" class="waiting">{waiting}</td></tr>'
    paged = "true" if page is not None and page.partial else "false"
    how = _e(msgspec.json.encode(fleet.TOTALS_HOW).decode())
    symbols = _e(msgspec.json.encode(SYMBOLS).decode())
    return (
        f'<table class="fleet" id="fleet" data-sort-key="" data-sort-dir="" data-fresh-s="{fleet.FRESH_S:g}" '
        f'data-paged="{paged}" '
        f'data-how="{how}" data-symbols="{symbols}" data-now="{_e(utc_text(now))}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}{empty}</tbody><tfoot>{totals_html(totals)}</tfoot></table>"
    )


def _page_link(page: FleetPage, number: int, label: str, rel: str) -> str:
    query = page.query.params(number)
    if number < 1 or number > page.pages or number == page.page:
        return f'<span class="seg" aria-disabled="true" data-rel="{rel}">{_e(label)}</span>'
    href = "/?" + "&amp;".join(f"{k}={_e(quote(v))}" for k, v in query.items())
    return f'<a class="seg" href="{href}" rel="{rel}" data-rel="{rel}" data-page="{number}">{_e(label)}</a>'


def pager_html(page: FleetPage) -> str:
    """The search box and the page links (``#fleet-pager``: ``data-page``, ``data-pages``, ``data-matched``)."""
    first = (page.page - 1) * page.query.per_page
    shown = (f"{first + 1 if page.rows else 0:,}–{first + len(page.rows):,}"
             f" of {page.matched:,}" + (f" matching ({page.total:,} in all)" if page.query.q else ""))
    keep = "".join(f'<input type="hidden" name="{k}" value="{_e(v)}">'
                   for k, v in page.query.params(1).items() if k not in ("page", "q"))
    return (
        f'<nav class="pager" id="fleet-pager" data-page="{page.page}" data-pages="{page.pages}" '
        f'data-matched="{page.matched}" data-total="{page.total}" aria-label="pages of the fleet table">'
        f'<form method="get" action="/" role="search"><input type="search" name="q" id="fleet-q" '
        f'value="{_e(page.query.q)}" maxlength="64" placeholder="battery id contains…" '
        f'title="show the batteries whose id contains this (case-insensitive)">{keep}</form>'
        f'<span class="panel-sub" id="fleet-shown" title="{page.query.per_page} rows a page (?per_page=, up to '
        f'{MAX_PAGE_ROWS}); the totals are of every battery">'
        f"{_e(shown)}</span>"
        f"{_page_link(page, 1, '« first', 'first')}{_page_link(page, page.page - 1, '‹ previous', 'prev')}"
        f'<span class="seg" data-rel="current">page {page.page} of {page.pages}</span>'
        f"{_page_link(page, page.page + 1, 'next ›', 'next')}{_page_link(page, page.pages, 'last »', 'last')}</nav>"
    )


__all__ = ["COLUMNS", "fleet_table", "pager_html", "row_html", "soc_cell", "totals_html"]
