"""The writer process's framing: whatever the socket's chunks, every message arrives once,
in order, and a message that cannot be pickled fails alone."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.store.writer_process import _frame, _take_frames

messages = st.lists(
    st.tuples(st.sampled_from(["done", "commit", "log"]), st.integers(), st.text(max_size=300)),
    max_size=20,
)


@given(st.lists(messages, min_size=1, max_size=8), st.data())
def test_frames_split_anywhere_arrive_whole_and_in_order(
    frames: list[list[tuple[str, int, str]]], data: st.DataObject
) -> None:
    stream = b"".join(_frame(list(f)) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buffer, received = bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer += stream[start:end]
        received += _take_frames(buffer)
    assert received == [m for f in frames for m in f]
    assert buffer == b""


def test_an_unpicklable_outcome_fails_alone() -> None:
    frame = _frame([("done", 1, "booked"), ("done", 2, threading.Lock()), ("commit", 2, 0.1)])
    first, second, third = _take_frames(bytearray(frame))
    assert first == ("done", 1, "booked") and third == ("commit", 2, 0.1)
    assert second[:2] == ("done", 2) and isinstance(second[2], LedgerUnavailable)
