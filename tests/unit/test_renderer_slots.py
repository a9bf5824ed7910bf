"""The history requests' bound (nodes/renderer/slots.py): at most ``limit`` in flight, live ones served first."""

from __future__ import annotations

import asyncio

from nodes.renderer.slots import LIVE, NEW, PrioritySlots


async def test_waiters_are_served_by_priority_then_first_come_and_never_more_than_the_limit() -> None:
    slots = PrioritySlots(2)
    gate = asyncio.Event()
    served: list[str] = []
    peak = 0

    async def ask(name: str, priority: int) -> None:
        nonlocal peak
        async with slots.slot(priority):
            peak = max(peak, slots.held)
            served.append(name)
            await gate.wait()

    tasks = [asyncio.create_task(ask(f"new-{i}", NEW)) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(ask("battery-1", LIVE)))
    await asyncio.sleep(0.01)
    assert served == ["new-0", "new-1"], "two in flight, the rest wait"
    gate.set()
    await asyncio.gather(*tasks)
    assert served[2] == "battery-1", "the live request goes before the new ones that came first"
    assert served[3:] == ["new-2", "new-3", "new-4"]
    assert peak == 2
    assert (slots.held, slots.waiting) == (0, 0)


async def test_a_cancelled_waiter_gives_up_its_place_without_losing_a_slot() -> None:
    slots = PrioritySlots(1)
    release = asyncio.Event()

    async def hold() -> None:
        async with slots.slot(NEW):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)

    async def wait_in_line() -> None:
        async with slots.slot(LIVE):
            pass

    waiter = asyncio.create_task(wait_in_line())
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await holder
    assert waiter.cancelled()
    assert slots.held == 0
    async with slots.slot(NEW):
        assert slots.held == 1
