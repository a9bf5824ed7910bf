"""Headless Chromium driven through the DevTools protocol, with nothing but aiohttp.

Debian's ``chromium`` is used (installed by ``deploy/test`` when missing); without it browser tests skip with
the reason. ``--screenshot`` alone cannot wait for a page whose event stream never ends, so tests navigate,
poll a JavaScript condition, then capture the page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from deploy.processes import stop_process
from deploy.stack import free_port

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab: navigate, evaluate JavaScript, wait for a condition, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._seq = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._seq += 1
        mine = self._seq
        await self._ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            message = await self._ws.receive(timeout=60)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection ended: {message.type}")
            data = json.loads(message.data)
            if data.get("id") == mine:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result

    async def goto(self, url: str) -> None:
        """Navigate (does not wait for the page's own data; use :meth:`wait_for`)."""
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0, what: str = "condition") -> Any:
        """Poll ``expression`` until it is truthy; fail with its last value after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value {value!r}")

    async def screenshot(self, path: Path) -> Path:
        """Save the full page as PNG."""
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        # a one-off small file write in a test helper: blocking the loop for it is harmless
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))  # noqa: ASYNC240
        return path


@contextlib.asynccontextmanager
async def open_page(width: int = 1400, height: int = 1800) -> AsyncIterator[Page]:
    """Start a fresh headless Chromium and yield its first tab; the browser is killed afterwards."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="bess-chromium-")
    process = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; the browser runs on its own
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while not targets:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                        targets = [t for t in await response.json() if t.get("type") == "page"]
                except aiohttp.ClientError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    await asyncio.sleep(0.1)
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call(
                    "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
                )
                yield page
    finally:
        stop_process(process, 10)
        shutil.rmtree(profile, ignore_errors=True)
