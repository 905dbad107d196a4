"""Cancelling tasks that must stop, even where Python 3.11 loses a cancellation.

On Python 3.11, `asyncio.wait_for` (used inside pymodbus and aiosqlite) and
`asyncio.timeout` can swallow a cancellation that arrives in the same loop
iteration as the awaited result or the deadline: the task carries on as if it
had never been cancelled. Under load (hundreds of polls a second) that happens,
and a shutdown that cancels once can wait forever. `cancel_and_wait` cancels
again until the tasks are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from inventory_core.log import get_logger

log = get_logger(__name__)

RETRY_S = 0.1


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, give_up_s: float = 3.0) -> None:
    """Cancel `tasks` and wait until each has finished, cancelling again every
    RETRY_S; after `give_up_s` stop waiting (and say which tasks are left)."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.warning("tasks_left_running", give_up_s=round(give_up_s, 1), tasks=names)
            return
        _done, pending = await asyncio.wait(pending, timeout=min(RETRY_S, left))
