"""Waiting in a test for a state that has no event to wait for: one helper for every test.

`eventually` (in a coroutine) and `wait_until` (in plain code, e.g. while a
subprocess runs) share one signature and one rule: call `condition` every
`interval_s` until it returns a true value, and return that value. When
`timeout_s` passes first, fail with an AssertionError that names `what` was
awaited, how long, and what the condition last said (its last value, or the
last exception it raised that `ignoring` lists).

- An exception from `condition` propagates at once (an assertion inside it,
  e.g. "the process is still running", ends the wait with that assertion),
  unless it is an instance of one of `ignoring`: then it counts as "not yet"
  (e.g. a refused connection while a server is still starting).
- `what` may be a callable: it is called only on timeout, for details known
  only then (a process's stderr so far).
- `eventually` also bounds a condition that hangs: an awaited condition is
  cancelled at the deadline.

Use them only for polling. Where the code under test offers an event, a
queue or a future, await that instead; where a test asserts that something
*stays* true for a while, write that loop out.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

__all__ = ["TIMEOUT_S", "eventually", "wait_until"]

T = TypeVar("T")

TIMEOUT_S = 15.0  # generous: for what takes a second or two when all is well (busy CI machines)

What = str | Callable[[], str]
Ignored = tuple[type[BaseException], ...]


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    what: What,
    *,
    timeout_s: float = TIMEOUT_S,
    interval_s: float = 0.02,
    ignoring: Ignored = (),
) -> T:
    """Await until `condition()` (a plain or an async callable) returns a true value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: object = None
    while True:
        bound = asyncio.timeout_at(deadline)  # a condition that hangs ends at the deadline
        try:
            async with bound:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError as exc:
            if bound.expired():
                raise AssertionError(_timed_out(what, timeout_s, last)) from None
            if not isinstance(exc, ignoring):
                raise
            last, result = exc, None  # the condition's own timeout, and it is ignored
        except ignoring as exc:
            last, result = exc, None
        else:
            last = result
            if result:
                return cast("T", result)
        if loop.time() >= deadline:
            raise AssertionError(_timed_out(what, timeout_s, last))
        await asyncio.sleep(interval_s)


def wait_until(
    condition: Callable[[], T],
    what: What,
    *,
    timeout_s: float = TIMEOUT_S,
    interval_s: float = 0.1,
    ignoring: Ignored = (),
) -> T:
    """Block (time.sleep) until `condition()` returns a true value."""
    deadline = time.monotonic() + timeout_s
    while True:
        last: object
        try:
            result = condition()
        except ignoring as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, timeout_s, last))
        time.sleep(interval_s)


def _timed_out(what: What, timeout_s: float, last: object) -> str:
    named = what() if callable(what) else what
    message = f"timed out after {timeout_s:g} s waiting for {named}"
    if isinstance(last, BaseException):
        return f"{message} (last error: {type(last).__name__}: {last})"
    if last is None or isinstance(last, bool):
        return message
    return f"{message} (last value: {last!r})"
