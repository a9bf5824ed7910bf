"""The README's "Then try the user's four calls" block is the seed's four curl lines, as deploy/seed.py holds them
(the one copy deploy/up's banner prints and tests/integration/test_seed_curl.py runs), and deploy/up's banner
prints them pointed at the configured gateway ports."""

from __future__ import annotations

import re
from pathlib import Path

from deploy import seed

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_seed_block() -> str:
    text = README.read_text()
    found = re.search(r"Then try the user's four calls, verbatim:\n\n```bash\n(.*?)```", text, re.DOTALL)
    assert found is not None, "the README lost its seed block"
    return found.group(1)


def test_readme_shows_the_seed_lines_verbatim_and_nothing_else() -> None:
    assert _readme_seed_block() == "\n\n".join(seed.SEED_CURL_LINES) + "\n"


def test_banner_lines_follow_the_configured_gateway_ports() -> None:
    moved = [seed.for_ports(line, (15000, 15003)) for line in seed.SEED_CURL_LINES]
    assert all("127.0.0.1:5000/" not in line and "127.0.0.1:5003/" not in line for line in moved)
    assert moved[0].startswith("curl -X POST http://127.0.0.1:15000/write ")
    assert "http://127.0.0.1:15003/read?" in moved[1]
    assert [seed.for_ports(line, seed.SEED_PORTS) for line in seed.SEED_CURL_LINES] == list(seed.SEED_CURL_LINES)
