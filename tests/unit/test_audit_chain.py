"""The audit hash chain: intact chains verify; any edit, deletion or reordering is caught."""

from __future__ import annotations

import itertools
from dataclasses import fields, replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from inventory_core.domain.audit import (
    GENESIS_HASH,
    AuditRecord,
    canonical_json,
    check_record,
    make_record,
    record_hash,
)

TEXT_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name != "seq")
text = st.text(min_size=1, max_size=40)
record_bodies = st.fixed_dictionaries(
    {
        "timestamp": text,
        "user": text,
        "action": st.sampled_from(["receipt", "issue", "create", "update", "lot-status"]) | text,
        "object_type": st.sampled_from(["movement", "lot", "material", "storage_unit"]) | text,
        "object_id": text,
        "reason": text,
        "old": st.just("{}") | text,
        "new": st.builds(lambda d: canonical_json(d), st.dictionaries(text, text, max_size=3))
        | text,
    }
)


def build_chain(writer: str, bodies: list[dict[str, str]]) -> list[AuditRecord]:
    chain: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        record = make_record(writer=writer, seq=seq, prev_hash=prev, **body)
        chain.append(record)
        prev = record.hash
    return chain


def first_break(chain: list[AuditRecord]) -> tuple[int, str] | None:
    """(position, reason) of the first record that breaks the chain, walking it as verify does."""
    expected_seq, prev = 1, GENESIS_HASH
    for position, record in enumerate(chain):
        why = check_record(record, expected_seq, prev)
        if why is not None:
            return position, why
        expected_seq, prev = record.seq + 1, record.hash
    return None


writers = st.sampled_from(["svc-a", "svc-b", "writer-ü"])
chains = st.builds(build_chain, writers, st.lists(record_bodies, min_size=1, max_size=12))
long_chains = st.builds(build_chain, writers, st.lists(record_bodies, min_size=2, max_size=12))


@given(chain=chains)
def test_chain_of_made_records_verifies(chain: list[AuditRecord]) -> None:
    assert first_break(chain) is None
    assert chain[0].prev_hash == GENESIS_HASH
    for earlier, later in itertools.pairwise(chain):
        assert later.prev_hash == earlier.hash
        assert later.seq == earlier.seq + 1


def test_record_hash_is_sha256_hex_over_the_stored_fields() -> None:
    record = make_record(
        writer="w", seq=1, timestamp="2026-01-01T00:00:00.000000Z", user="ann",
        action="receipt", object_type="movement", object_id="m-1", reason="",
        old="", new='{"q":"1"}', prev_hash=GENESIS_HASH,
    )  # fmt: skip
    assert len(record.hash) == 64 and int(record.hash, 16) >= 0
    assert record.hash == record_hash(
        "w", 1, "2026-01-01T00:00:00.000000Z", "ann", "receipt", "movement", "m-1", "", "",
        '{"q":"1"}', GENESIS_HASH,
    )  # fmt: skip


def test_field_boundaries_are_part_of_the_hash() -> None:
    base = {"timestamp": "t", "user": "u", "action": "a", "object_type": "o", "reason": ""}
    one = make_record(writer="w", seq=1, prev_hash=GENESIS_HASH, object_id="ab", old="c",
                      new="", **base)  # fmt: skip
    two = make_record(writer="w", seq=1, prev_hash=GENESIS_HASH, object_id="a", old="bc",
                      new="", **base)  # fmt: skip
    assert one.hash != two.hash


@settings(max_examples=400)
@given(
    chain=chains,
    data=st.data(),
    field_name=st.sampled_from((*TEXT_FIELDS, "seq")),
)
def test_any_single_character_change_of_any_field_is_detected_at_that_record(
    chain: list[AuditRecord], data: st.DataObject, field_name: str
) -> None:
    position = data.draw(st.integers(0, len(chain) - 1), label="record")
    record = chain[position]
    original = str(getattr(record, field_name))
    index = data.draw(st.integers(0, len(original) - 1), label="character")
    alphabet = (
        st.characters(min_codepoint=48, max_codepoint=57)
        if field_name == "seq"
        else st.characters(codec="utf-8")  # what a database column can hold: no lone surrogates
    )
    replacement = data.draw(alphabet.filter(lambda c: c != original[index]), label="replacement")
    edited_text = original[:index] + replacement + original[index + 1 :]
    value: object = int(edited_text) if field_name == "seq" else edited_text
    tampered = list(chain)
    tampered[position] = replace(record, **{field_name: value})

    found = first_break(tampered)

    assert found is not None, f"edit of {field_name} in record {position} went unnoticed"
    assert found[0] == position


@given(chain=long_chains, data=st.data())
def test_deleting_any_record_but_the_last_is_detected_where_it_was(
    chain: list[AuditRecord], data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(chain) - 2))
    tampered = chain[:position] + chain[position + 1 :]
    assert first_break(tampered) == (
        position,
        f"sequence gap: expected {position + 1}, found {position + 2} (record deleted)",
    )


@given(chain=chains)
def test_deleting_the_last_record_is_only_visible_against_the_recorded_head(
    chain: list[AuditRecord],
) -> None:
    head = (chain[-1].seq, chain[-1].hash)
    truncated = chain[:-1]
    assert first_break(truncated) is None  # the walk alone cannot see a cut tail
    end = (truncated[-1].seq, truncated[-1].hash) if truncated else (0, GENESIS_HASH)
    assert end != head


@given(chain=long_chains, data=st.data())
def test_swapping_two_records_is_detected_at_the_first_of_them(
    chain: list[AuditRecord], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(chain) - 2))
    j = data.draw(st.integers(i + 1, len(chain) - 1))
    tampered = list(chain)
    tampered[i], tampered[j] = tampered[j], tampered[i]
    found = first_break(tampered)
    assert found is not None and found[0] == i


@given(chain=long_chains, data=st.data())
def test_swapping_records_and_renumbering_them_breaks_the_hash_links(
    chain: list[AuditRecord], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(chain) - 2))
    tampered = list(chain)
    tampered[i], tampered[i + 1] = (
        replace(chain[i + 1], seq=chain[i].seq),
        replace(chain[i], seq=chain[i + 1].seq),
    )
    assert first_break(tampered) == (
        i,
        "previous-hash link broken (record deleted, inserted or reordered)",
    )


@given(chain=long_chains, data=st.data(), new_reason=text)
def test_an_edited_record_with_a_recomputed_hash_breaks_the_next_link(
    chain: list[AuditRecord], data: st.DataObject, new_reason: str
) -> None:
    position = data.draw(st.integers(0, len(chain) - 2))
    old = chain[position]
    assume(new_reason != old.reason)
    forged = make_record(
        writer=old.writer, seq=old.seq, timestamp=old.timestamp, user=old.user,
        action=old.action, object_type=old.object_type, object_id=old.object_id,
        reason=new_reason, old=old.old, new=old.new, prev_hash=old.prev_hash,
    )  # fmt: skip
    tampered = [*chain[:position], forged, *chain[position + 1 :]]
    assert first_break(tampered) == (
        position + 1,
        "previous-hash link broken (record deleted, inserted or reordered)",
    )


@given(chain=chains, data=st.data(), body=record_bodies)
def test_inserting_a_forged_record_is_detected(
    chain: list[AuditRecord], data: st.DataObject, body: dict[str, str]
) -> None:
    position = data.draw(st.integers(0, len(chain)))
    prev = chain[position - 1].hash if position else GENESIS_HASH
    forged = make_record(writer=chain[0].writer, seq=position + 1, prev_hash=prev, **body)
    tampered = [*chain[:position], forged, *chain[position:]]
    if position == len(chain):
        # appended at the tail with a valid link: only the recorded head reveals it
        assert first_break(tampered) is None
        assert (forged.seq, forged.hash) != (chain[-1].seq, chain[-1].hash)
    else:
        found = first_break(tampered)
        assert found is not None and found[0] == position + 1


def test_check_record_names_each_kind_of_break() -> None:
    first = make_record(
        writer="w", seq=1, timestamp="t", user="u", action="a", object_type="o",
        object_id="i", reason="r", old="", new="{}", prev_hash=GENESIS_HASH,
    )  # fmt: skip
    assert check_record(first, 1, GENESIS_HASH) is None
    assert check_record(first, 2, GENESIS_HASH) == "sequence out of order: expected 2, found 1"
    assert (
        check_record(replace(first, seq=3), 1, GENESIS_HASH)
        == "sequence gap: expected 1, found 3 (record deleted)"
    )
    assert (
        check_record(first, 1, "f" * 64)
        == "previous-hash link broken (record deleted, inserted or reordered)"
    )
    assert (
        check_record(replace(first, user="mallory"), 1, GENESIS_HASH)
        == "hash mismatch (record edited)"
    )
