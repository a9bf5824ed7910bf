"""Clearing a battery's retained figure topics (an empty retained payload: the broker forgets the figure).

The renderer publishes the default window's figures only for the batteries it draws always
(:mod:`nodes.renderer.attention`); one that leaves that set must not keep a stale drawing on its retained topics.
"""

from __future__ import annotations

from nodes.contract.topics import FIGURE
from nodes.renderer.figures import FIGURE_IDS
from nodes.runtime.core import MessageBus


async def clear_figures(bus: MessageBus, battery: str) -> None:
    """Clear every retained ``battery/{battery}/figure/{figure}`` topic."""
    for figure_id in FIGURE_IDS:
        await bus.publish_bytes(bus.name(FIGURE, battery=battery, figure=figure_id), b"", retain=True)


__all__ = ["clear_figures"]
