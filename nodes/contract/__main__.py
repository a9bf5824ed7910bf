"""``python -m nodes.contract [--check] [--root DIR]``: write (or check) topics.md, schemas/ and access.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nodes.contract.docs import differences, write

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    """Generate the contract documents; with ``--check`` exit 1 when they are out of date."""
    parser = argparse.ArgumentParser(prog="python -m nodes.contract", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the checked-in files differ")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences(args.root)
        if stale:
            print("out of date (run `python -m nodes.contract`): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("topics.md, schemas/ and nodes/contract/access.json are up to date")
        return 0
    for path in write(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
