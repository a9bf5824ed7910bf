"""The user's four curl lines from the seed document, byte for byte: the one copy that ``deploy/up``'s banner
prints, ``tests/integration/test_seed_curl.py`` runs (and checks against the seed document when it is present)
and ``tests/unit/test_readme_seed.py`` finds in the README. Standard library only."""

from __future__ import annotations

from collections.abc import Sequence

WRITE_1 = """curl -X POST http://127.0.0.1:5000/write -H "Content-Type: application/json" \\
-d '{"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"}'"""
READ = """curl "http://127.0.0.1:5003/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z\""""
COMMAND_LINE = """curl -X POST http://127.0.0.1:5000/mqtt/publish -H "Content-Type: application/json" \\
-d '{"command": "DISCHARGE 50kW"}'"""
WRITE_2 = """curl -X POST http://127.0.0.1:5003/write -H "Content-Type: application/json" \\
-d '{"SOC": 500, "target_discharge": 0, "target_charge": 400, "timestamp": "2025-01-14T10:00:00Z"}'"""
#: In the seed's order.
SEED_CURL_LINES: tuple[str, ...] = (WRITE_1, READ, COMMAND_LINE, WRITE_2)
#: The gateway ports the seed's lines call.
SEED_PORTS: tuple[int, int] = (5000, 5003)


def for_ports(line: str, gateway_ports: Sequence[int]) -> str:
    """A seed curl line pointed at the configured gateway ports (the seed uses :data:`SEED_PORTS`)."""
    for default, port in zip(SEED_PORTS, gateway_ports, strict=False):
        line = line.replace(f"127.0.0.1:{default}/", f"127.0.0.1:{port}/")
    return line
