"""The writer's IN-lists are padded to a few lengths, so it compiles few statements."""

from hypothesis import given
from hypothesis import strategies as st

from inventory_core.store.writer import _bucket


@given(st.integers(min_value=0, max_value=100_000))
def test_a_bucket_holds_the_list_and_wastes_at_most_half_or_1023(length: int) -> None:
    size = _bucket(length)
    assert size >= length
    assert size - length <= max(length // 2 + 1, 1023) if length > 1 else size == length


def test_lists_that_grow_by_one_share_a_few_statements() -> None:
    assert len({_bucket(n) for n in range(1, 5001)}) == 15  # 1..1024 in 11, then 4 of 1024
