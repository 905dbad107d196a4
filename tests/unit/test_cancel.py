"""cancel_and_wait stops tasks that lose a cancellation (Python 3.11 wait_for/timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from inventory_core.cancel import cancel_and_wait
from tests.log_events import events


async def _loses_the_first_cancellation() -> None:
    with contextlib.suppress(asyncio.CancelledError):  # what a racing wait_for does
        await asyncio.sleep(60)
    await asyncio.sleep(60)


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    task = asyncio.create_task(_loses_the_first_cancellation())
    plain = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await cancel_and_wait([task, plain])
    assert task.cancelled() and plain.cancelled()


async def test_gives_up_on_a_task_that_never_stops_and_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    released = asyncio.Event()

    async def immortal() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING):
        await cancel_and_wait([task], give_up_s=0.3)
    assert 0.3 <= loop.time() - started < 1.0
    assert not task.done()
    assert events(caplog.records) == [
        {"event": "tasks_left_running", "give_up_s": 0.3, "tasks": "immortal"}
    ]
    released.set()  # leave nothing running
    task.cancel()
    await task
