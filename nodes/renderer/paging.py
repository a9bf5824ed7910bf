"""The index's fleet table in pages (pure: rows and the query in, one page out; no HTTP here).

With thousands of batteries one page holding every row is megabytes of markup, so ``GET /`` shows
:data:`PAGE_ROWS` rows at a time: ``?page=`` (from 1), ``?q=`` (a search: the ids containing it, case-insensitive),
``?per_page=`` (1 to :data:`MAX_PAGE_ROWS`), ``?sort=`` and ``?dir=asc|desc`` (the table's own column keys, sorted
over every battery before paging, by the rules of the page's script: unknown values last either way, ties by id).
The totals are always over every battery, never the page or the search. ``GET /api/fleet`` takes the same
parameters and answers one page too, with the same totals; ``GET /fleet.csv`` has every battery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from nodes.contract.messages import SEVERITIES
from nodes.renderer.fleet import FleetRow

PAGE_ROWS: Final = 100
MAX_PAGE_ROWS: Final = 1000
MAX_QUERY_CHARS: Final = 64

_Key = Callable[[FleetRow], float | str | None]
SORT_KEYS: Final[dict[str, _Key]] = {
    "battery": lambda r: r.battery,
    "soc": lambda r: r.soc_pct if r.soc_pct is not None else r.soc_kwh,
    "power": lambda r: r.power_kw,
    "mode": lambda r: r.mode or "unknown",
    "control": lambda r: r.control_mode or "default",
    "alarms": lambda r: (SEVERITIES.index(r.alarm_severity) + 1 if r.alarm_severity else 0) * 1000 + r.alarms,
    "revenue": lambda r: r.revenue_today,
    "age": lambda r: r.telemetry_age_s,
}
"""The column keys of :data:`nodes.renderer.web_fleet.COLUMNS`, valued as the cells' ``data-sort-value``."""


class PageError(ValueError):
    """A query parameter that is not a page, a search or a sort; ``field`` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PageQuery:
    """What the viewer asked for."""

    page: int = 1
    q: str = ""
    sort: str = ""
    descending: bool = False
    per_page: int = PAGE_ROWS

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> PageQuery:
        """From a request's query (:class:`PageError` for a bad value)."""
        raw = query.get("page", "1") or "1"
        if not raw.isdigit() or int(raw) < 1 or len(raw) > 6:
            raise PageError("page must be a whole number from 1", "page")
        q = query.get("q", "").strip()
        if len(q) > MAX_QUERY_CHARS:
            raise PageError(f"q must be at most {MAX_QUERY_CHARS} characters", "q")
        sort = query.get("sort", "")
        if sort and sort not in SORT_KEYS:
            raise PageError("sort must be one of " + ", ".join(SORT_KEYS), "sort")
        direction = query.get("dir", "asc") or "asc"
        if direction not in ("asc", "desc"):
            raise PageError("dir must be asc or desc", "dir")
        size = query.get("per_page", "") or str(PAGE_ROWS)
        if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE_ROWS:
            raise PageError(f"per_page must be 1 to {MAX_PAGE_ROWS}", "per_page")
        return cls(int(raw), q, sort, direction == "desc", int(size))

    def params(self, page: int) -> dict[str, str]:
        """The query of page ``page`` of the same view (defaults left out)."""
        out = {"page": str(page)} | ({"q": self.q} if self.q else {})
        if self.sort:
            out |= {"sort": self.sort, "dir": "desc" if self.descending else "asc"}
        return out | ({"per_page": str(self.per_page)} if self.per_page != PAGE_ROWS else {})


@dataclass(frozen=True)
class FleetPage:
    """One page of the table: its rows, where it is, and how many batteries matched."""

    rows: list[FleetRow]
    page: int
    pages: int
    matched: int
    total: int
    query: PageQuery

    @property
    def partial(self) -> bool:
        """The page does not hold every battery (so its script must not add rows or sum the rows it has)."""
        return self.pages > 1 or bool(self.query.q)


def sort_rows(rows: Sequence[FleetRow], key: str, descending: bool) -> list[FleetRow]:
    """``rows`` by the column ``key``: unknown values last in both directions, ties (and no key) by id."""
    by_id = sorted(rows, key=lambda r: r.battery)
    if not key:
        return by_id
    value = SORT_KEYS[key]
    known = [r for r in by_id if value(r) is not None]
    unknown = [r for r in by_id if value(r) is None]
    known.sort(key=value, reverse=descending)  # type: ignore[arg-type]  # one column: one type
    return known + unknown


def page_of(rows: Sequence[FleetRow], query: PageQuery) -> FleetPage:
    """The page ``query`` asks for (the last one when it asks beyond the end)."""
    per_page = query.per_page
    needle = query.q.casefold()
    matched = [r for r in rows if needle in r.battery.casefold()] if needle else list(rows)
    ordered = sort_rows(matched, query.sort, query.descending)
    pages = max(1, math.ceil(len(ordered) / per_page))
    page = min(query.page, pages)
    start = (page - 1) * per_page
    return FleetPage(ordered[start : start + per_page], page, pages, len(matched), len(rows), query)


__all__ = ["MAX_PAGE_ROWS", "PAGE_ROWS", "SORT_KEYS", "FleetPage", "PageError", "PageQuery", "page_of", "sort_rows"]
