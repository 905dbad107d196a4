"""The tests' one polling helper: it returns what the condition returned, fails naming what
it awaited, counts only the listed exceptions as "not yet" and bounds a hanging condition."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.polling import eventually, wait_until


async def test_eventually_returns_the_first_true_value_of_a_plain_or_async_condition() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter) >= 3 and "three", "three calls") == "three"

    async def ready() -> list[int]:
        await asyncio.sleep(0)
        return [1] if next(counter) >= 6 else []

    assert await eventually(ready, "six calls", interval_s=0) == [1]


async def test_eventually_fails_naming_what_it_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as failed:
        await eventually(lambda: [], "the ledger's first movement", timeout_s=0.05)
    assert str(failed.value) == (
        "timed out after 0.05 s waiting for the ledger's first movement (last value: [])"
    )
    with pytest.raises(AssertionError, match=r"waiting for details known late$"):
        await eventually(lambda: False, lambda: "details known late", timeout_s=0.01)


async def test_eventually_ignores_only_the_listed_exceptions() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("not listening yet")

    with pytest.raises(AssertionError, match="last error: ConnectionRefusedError: not listening"):
        await eventually(refused, "a listener", timeout_s=0.05, ignoring=(OSError,))
    with pytest.raises(ConnectionRefusedError):  # not listed: at once, not after the timeout
        await asyncio.wait_for(eventually(refused, "a listener"), 1)


async def test_eventually_cancels_a_condition_that_hangs_at_the_deadline() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for an answer"):
        await asyncio.wait_for(eventually(hangs, "an answer", timeout_s=0.05), 1)


def test_wait_until_is_the_same_helper_for_code_outside_an_event_loop() -> None:
    counter = itertools.count()
    assert wait_until(lambda: next(counter) == 2, "two calls", interval_s=0) is True
    with pytest.raises(AssertionError, match=r"^timed out after 0.05 s waiting for a file$"):
        wait_until(lambda: None, "a file", timeout_s=0.05, interval_s=0.01)
    with pytest.raises(AssertionError, match="last error: OSError: busy"):
        wait_until(_busy, "a port", timeout_s=0.05, interval_s=0.01, ignoring=(OSError,))


def _busy() -> bool:
    raise OSError("busy")
