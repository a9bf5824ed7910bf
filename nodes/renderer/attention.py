"""Which batteries the renderer draws (pure: no I/O, the clock is passed in).

Drawing a battery costs history requests (its window, its KPI days, its alarms) and a figure build, so with
thousands of ids (a fleet joining, or a client inventing ids over HTTP) drawing every battery would starve the
ones people look at. A battery is drawn ("warm") when it is

* **published**: among the first ``publish_max`` batteries, those that announced a spec first (a real device
  does; an id that only ever got an HTTP write has none), each group in the order the renderer first heard of
  it. These get their retained ``figure/*`` and ``revenue`` topics. While the fleet has at most ``publish_max``
  batteries, that is every battery (as before); a burst of new ids never pushes out a battery already there
  unless the new ones have a spec and the old one has not;
* **viewed**: a browser has its battery page open on the live default window (an event stream with figures);
* **recently viewed**: one of the ``warm_max`` batteries whose figures were asked for most recently (a page on
  another window, ``GET /api/figures``), for ``warm_s`` after the last request.

A render pass draws the live batteries first and phases in new ones and periodic refreshes: :func:`render_order`.

Every other battery is cold: its index row stays live (telemetry, state, alarms), but nothing is drawn, no
history is requested and no live samples are buffered for it; its first view draws it from the recorder's history.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from itertools import count


class Attention:
    """Who is drawn. ``streams()`` gives the batteries with a live figure stream open (the dashboard's clients)."""

    def __init__(self, *, publish_max: int, warm_max: int, warm_s: float,
                 streams: Callable[[], Iterable[str]] = frozenset) -> None:
        self.publish_max = publish_max
        self.warm_max = warm_max
        self.warm_s = warm_s
        self.streams = streams
        self._seen: dict[str, int] = {}
        self._specced: set[str] = set()
        self._order = count()
        self._published: frozenset[str] = frozenset()
        """The first ``publish_max`` by (no spec, first seen), kept up to date as batteries arrive."""
        self._recent: OrderedDict[str, float] = OrderedDict()
        """battery -> monotonic time of its latest figure request (the most recent last)."""

    # -- inputs -------------------------------------------------------------------------------------------

    def seen(self, battery: str) -> None:
        """The renderer heard of ``battery`` (any message). Called for every message: O(1)."""
        if battery not in self._seen:
            self._seen[battery] = next(self._order)
            # a battery new to the renderer ranks after every one before it (unless a spec comes later)
            if len(self._published) < self.publish_max:
                self._published = self._published | {battery}

    def spec(self, battery: str) -> None:
        """``battery`` announced a spec: it ranks before the batteries without one. O(publish_max)."""
        self.seen(battery)
        if battery in self._specced:
            return
        self._specced.add(battery)
        if battery in self._published or not self._published:
            return
        last = max(self._published, key=self._rank)
        if self._rank(battery) < self._rank(last):
            self._published = (self._published - {last}) | {battery}

    def _rank(self, battery: str) -> tuple[bool, int]:
        return battery not in self._specced, self._seen[battery]

    def requested(self, battery: str, now: float) -> None:
        """Somebody asked for ``battery``'s figures (kept drawn for ``warm_s``, at most ``warm_max`` of them)."""
        self._recent[battery] = now
        self._recent.move_to_end(battery)
        while len(self._recent) > self.warm_max:
            self._recent.popitem(last=False)

    # -- the answer ---------------------------------------------------------------------------------------

    def published(self) -> frozenset[str]:
        """The batteries whose figures go on the retained topics (at most ``publish_max``)."""
        return self._published

    def recent(self, now: float) -> set[str]:
        """The recently viewed batteries still within ``warm_s``."""
        while self._recent:
            at = next(iter(self._recent.values()))
            if now - at <= self.warm_s:
                break
            self._recent.popitem(last=False)
        return set(self._recent)

    def viewed(self, now: float) -> set[str]:
        """The batteries somebody looks at: a live figure stream open, or a recent figure request."""
        return set(self.streams()) | self.recent(now)

    def warm(self, now: float) -> set[str]:
        """Every battery drawn now: published, viewed, recently viewed."""
        return set(self.published()) | set(self.streams()) | self.recent(now)

    def is_warm(self, battery: str, now: float) -> bool:
        """One battery's answer (cheap: for every telemetry message)."""
        if battery in self.published():
            return True
        at = self._recent.get(battery)
        if at is not None and now - at <= self.warm_s:
            return True
        return battery in set(self.streams())

    def counts(self, now: float) -> dict[str, int]:
        """For the node's status counters."""
        return {"batteries_known": len(self._seen), "batteries_published": len(self.published()),
                "batteries_warm": len(self.warm(now))}


def render_order(changed: set[str], stale: set[str], drawn: set[str], viewed: set[str]) -> list[tuple[str, bool]]:
    """The order of a render pass, each battery with whether it may wait for the next pass.

    First the batteries drawn before whose inputs changed (cheap: their history is read; never deferred), then
    the new ones (a first draw reads history), viewed ones first, then those due only for the periodic refresh
    (the window slides). The node starts a deferrable one only while the pass is shorter than the render
    interval (at least one each pass), so neither a burst of new batteries nor the refresh of many delays the
    live ones. By id within each group."""
    new = sorted((changed | stale) - drawn, key=lambda b: (b not in viewed, b))
    return ([(b, False) for b in sorted(changed & drawn)] + [(b, True) for b in new]
            + [(b, True) for b in sorted((stale - changed) & drawn)])


__all__ = ["Attention", "render_order"]
