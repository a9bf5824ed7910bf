"""``python -m nodes.market parse --source SOURCE --zone ZONE FILE``: check a saved provider answer offline.

Prints the PriceForecast-shaped JSON of the document on stdout::

    {"zone": "de-lu", "currency": "EUR", "issued_at": "...", "source": "entsoe",
     "slots": [{"start": "...Z", "end": "...Z", "price_per_mwh": 12.5}, ...]}

``issued_at`` is the document's own creation time where it has one, else the time of parsing. Exit status 0;
an invalid, empty or "not yet published" document, an unknown zone or a zone the source does not serve exit 2
with one line on stderr naming the problem. ``FILE`` may be ``-`` for stdin.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import msgspec

from nodes.market.sources import SOURCES, parse_document
from nodes.market.sources.prices import NotYetPublished, ParsedPrices, SourceError
from nodes.market.sources.zones import UnknownZone, zone

PROG = "python -m nodes.market parse"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, like every other exit 2 of the project (argparse would print the usage too)
        self.exit(2, f"{PROG}: {message}\n")


class SlotOut(msgspec.Struct):
    """One slot as printed."""

    start: datetime
    end: datetime
    price_per_mwh: float


class ForecastOut(msgspec.Struct):
    """The PriceForecast shape (with ``price_per_mwh`` and the document's currency)."""

    zone: str
    currency: str
    issued_at: datetime
    source: str
    slots: list[SlotOut]


def render(parsed: ParsedPrices, now: datetime | None = None) -> bytes:
    """The JSON printed for ``parsed``."""
    out = ForecastOut(
        zone=parsed.zone,
        currency=parsed.currency,
        issued_at=parsed.published_at or now or datetime.now(UTC),
        source=parsed.source,
        slots=[SlotOut(s.start, s.end, s.price_per_mwh) for s in parsed.slots],
    )
    return msgspec.json.encode(out)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = _Parser(prog=PROG, description="Parse a saved price-provider answer offline.")
    parser.add_argument("--source", required=True, choices=sorted(SOURCES), help="which provider wrote the file")
    parser.add_argument("--zone", required=True, help="zone id, e.g. de-lu, se3, nsw1")
    parser.add_argument("--currency", help="for sources that answer in several currencies (energidataservice)")
    parser.add_argument("file", help="the saved answer, or - for stdin")
    return parser


def main(argv: list[str]) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        where = zone(args.zone)
    except UnknownZone as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"{PROG}: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        result = parse_document(args.source, data, where, args.currency)
    except SourceError as exc:
        print(f"{PROG}: {args.file}: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, NotYetPublished):
        print(f"{PROG}: {args.file}: not yet published: {result.reason}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(render(result) + b"\n")
    return 0
