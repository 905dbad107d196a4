"""Units of measure: exact conversions, density across dimensions, quantity parsing, text form."""

from __future__ import annotations

import math
from decimal import Context, Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inventory_core.domain.errors import UnitConversionError, ValidationError
from inventory_core.domain.units import (
    MAX_QUANTITY,
    QUANTUM,
    UNITS,
    canonical_uom,
    convert,
    format_decimal,
    parse_quantity,
)

# Quantities as a ledger sees them: at most 6 decimals, |q| < 1e12.
ledger_quantities = st.decimals(
    min_value=Decimal("-999999999999.999999"),
    max_value=Decimal("999999999999.999999"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)
densities = st.decimals(min_value=Decimal("0.05"), max_value=Decimal("25"), places=4)


@pytest.mark.parametrize(
    ("quantity", "from_uom", "to_uom", "expected"),
    [
        ("1", "t", "kg", "1000"),
        ("2.5", "kg", "g", "2500"),
        ("1500", "g", "kg", "1.5"),
        ("1", "g", "t", "0.000001"),
        ("1250", "kg", "t", "1.25"),
        ("1", "m3", "L", "1000"),
        ("250", "mL", "L", "0.25"),
        ("1.5", "L", "mL", "1500"),
        ("1", "m3", "mL", "1000000"),
        ("3", "mL", "m3", "0.000003"),
        ("42.123456", "kg", "kg", "42.123456"),
        ("-7.5", "t", "kg", "-7500"),
    ],
)
def test_conversion_within_a_dimension_is_exact(
    quantity: str, from_uom: str, to_uom: str, expected: str
) -> None:
    assert convert(Decimal(quantity), from_uom, to_uom, None) == Decimal(expected)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("l", "L"), ("ml", "mL"), ("m³", "m3"), ("KGM", "kg"), ("GRM", "g"), ("TNE", "t")],
)
def test_unit_aliases_convert_like_their_canonical_unit(alias: str, canonical: str) -> None:
    assert canonical_uom(alias) == canonical
    assert convert(Decimal("3"), alias, canonical, None) == Decimal("3")


@given(q=st.decimals(min_value=-(10**9), max_value=10**9, places=3))
def test_mass_round_trip_through_grams_and_tonnes_is_exact(q: Decimal) -> None:
    assert convert(q, "kg", "g", None) == q * 1000
    assert convert(convert(q, "kg", "g", None), "g", "kg", None) == q
    assert convert(convert(q, "kg", "t", None), "t", "kg", None) == q


@given(q=st.decimals(min_value=-(10**9), max_value=10**9, places=3))
def test_volume_round_trip_through_millilitres_and_cubic_metres_is_exact(q: Decimal) -> None:
    assert convert(q, "L", "mL", None) == q * 1000
    assert convert(convert(q, "L", "mL", None), "mL", "L", None) == q
    assert convert(convert(q, "L", "m3", None), "m3", "L", None) == q


@pytest.mark.parametrize(
    ("quantity", "from_uom", "to_uom", "density", "expected"),
    [
        ("1000", "L", "kg", "0.80", "800"),
        ("800", "kg", "L", "0.80", "1000"),
        ("1", "m3", "kg", "1.11", "1110"),
        ("2", "t", "m3", "0.80", "2.5"),
        ("500", "mL", "g", "1.3", "650"),
        # 1 / 1.11 = 0.9009009..., rounded half-even to the ledger's millionth
        ("1", "kg", "L", "1.11", "0.900901"),
    ],
)
def test_mass_and_volume_convert_through_density(
    quantity: str, from_uom: str, to_uom: str, density: str, expected: str
) -> None:
    assert convert(Decimal(quantity), from_uom, to_uom, Decimal(density)) == Decimal(expected)


@given(
    q=st.decimals(min_value=0, max_value=10**6, places=6),
    density=densities,
    from_uom=st.sampled_from(UNITS),
    to_uom=st.sampled_from(UNITS),
)
def test_every_conversion_result_is_quantized_to_the_ledger_resolution(
    q: Decimal, density: Decimal, from_uom: str, to_uom: str
) -> None:
    result = convert(q, from_uom, to_uom, density)
    assert result.as_tuple().exponent == QUANTUM.as_tuple().exponent
    assert result >= 0


@given(
    litres=st.decimals(min_value=0, max_value=10**6, places=3),
    density=st.decimals(min_value=Decimal("0.05"), max_value=Decimal("25"), places=3),
)
def test_volume_to_mass_is_exactly_volume_times_density(litres: Decimal, density: Decimal) -> None:
    assert convert(litres, "L", "kg", density) == litres * density
    assert convert(litres, "m3", "t", density) == litres * density


@pytest.mark.parametrize("density", [None, Decimal(0), Decimal("-1")])
@pytest.mark.parametrize(("from_uom", "to_uom"), [("L", "kg"), ("kg", "m3"), ("mL", "t")])
def test_conversion_across_dimensions_without_density_is_rejected(
    from_uom: str, to_uom: str, density: Decimal | None
) -> None:
    with pytest.raises(
        UnitConversionError,
        match=f"cannot convert {from_uom} to {to_uom}: the material has no density",
    ):
        convert(Decimal(1), from_uom, to_uom, density)


@pytest.mark.parametrize(("from_uom", "to_uom"), [("lb", "kg"), ("kg", "gal"), ("KG", "kg")])
def test_unknown_unit_is_rejected_naming_the_known_units(from_uom: str, to_uom: str) -> None:
    bad = from_uom if from_uom not in UNITS else to_uom
    with pytest.raises(
        UnitConversionError,
        match=rf"unknown unit of measure '{bad}' \(known: kg, g, t, L, mL, m3\)",
    ):
        convert(Decimal(1), from_uom, to_uom, Decimal(1))


def test_unit_conversion_error_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        canonical_uom("furlong")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, "0.1"),
        (0.3, "0.3"),
        (1e-7, "1E-7"),
        (2.675, "2.675"),
        (123.456, "123.456"),
        (-0.0, "-0.0"),
        (12, "12"),
        ("42.50", "42.50"),
        ("-.5", "-0.5"),
        ("+3.", "3"),
        ("1.5E+2", "1.5E+2"),
        (Decimal("1E+3"), "1E+3"),
    ],
)
def test_parse_quantity_gives_the_exact_decimal(value: object, expected: str) -> None:
    parsed = parse_quantity(value)
    assert parsed == Decimal(expected)
    assert str(parsed) == expected


@given(
    value=st.floats(
        min_value=-(10**12), max_value=10**12, exclude_min=True, exclude_max=True, allow_nan=False
    )
)
@example(0.1)
@example(1.1)
@example(5e-324)
def test_parse_quantity_of_float_uses_its_shortest_repr(value: float) -> None:
    parsed = parse_quantity(value)
    shortest = Decimal(repr(value))
    if shortest.as_tuple().exponent >= -30:  # type: ignore[operator]
        assert parsed == shortest
        assert float(parsed) == value
    else:  # beyond the ledger's finest resolution (1e-30) a float's tail is rounded away
        assert parsed == shortest.quantize(Decimal("1e-30"), context=Context(prec=80))


def test_parse_quantity_refuses_text_with_absurdly_many_decimal_places() -> None:
    with pytest.raises(ValidationError, match="more than 30 decimal places"):
        parse_quantity("1e-31")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (-math.inf, "not a finite number"),
        (Decimal("NaN"), "not a finite number"),
        (Decimal("sNaN"), "not a finite number"),
        ("Infinity", "not a number"),
        ("nan", "not a number"),
        ("1_000", "not a number"),  # Decimal() takes it: a typo must not post 1000
        (" 5", "not a number"),
        ("5 ", "not a number"),
        ("1,5", "not a number"),
        ("0x10", "not a number"),
        ("1e", "not a number"),
        ("1e999999999", "out of range"),  # once `internal error: Overflow`
        (Decimal("1e999999999"), "out of range"),
        ("-1e999999999", "out of range"),
        (True, "not a number"),
        (False, "not a number"),
        (None, "not a number"),
        (b"1", "not a number"),
        ([1], "not a number"),
        ("one", "not a number"),
        ("", "not a number"),
        (1e12, "out of range"),
        (-1e12, "out of range"),
        (10**12, "out of range"),
        ("1e13", "out of range"),
        (Decimal("-1000000000000.5"), "out of range"),
    ],
)
def test_parse_quantity_rejects_non_numbers_and_huge_values(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_quantity(value)


def test_parse_quantity_accepts_the_largest_value_below_the_limit() -> None:
    assert parse_quantity("999999999999.999999") < MAX_QUANTITY


def test_parse_quantity_rejects_absurdly_small_exponents() -> None:
    with pytest.raises(ValidationError):
        parse_quantity("1e-1000000")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1E+3"), "1000"),
        (Decimal("1500.000"), "1500"),
        (Decimal("0.250"), "0.25"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-12.50"), "-12.5"),
        (Decimal("0E-6"), "0"),
        (Decimal("-0.0"), "0"),
        (Decimal("123456789012.123456"), "123456789012.123456"),
        (Decimal("-1E+11"), "-100000000000"),
    ],
)
def test_format_decimal_is_plain_text_without_trailing_zeros(value: Decimal, expected: str) -> None:
    assert format_decimal(value) == expected


@given(value=ledger_quantities)
def test_format_decimal_of_ledger_quantities_never_uses_an_exponent_and_round_trips(
    value: Decimal,
) -> None:
    text = format_decimal(value)
    assert "E" not in text.upper()
    assert Decimal(text) == value
    if "." in text:
        assert not text.endswith("0") and not text.endswith(".")


@given(
    value=st.decimals(allow_nan=False, allow_infinity=False).filter(
        lambda d: abs(d.adjusted()) < 60 and len(d.as_tuple().digits) <= 28
    )
)
@example(Decimal("1E+40"))
@example(Decimal("1.5E-30"))
def test_format_decimal_never_uses_an_exponent_for_any_magnitude(value: Decimal) -> None:
    text = format_decimal(value)
    assert "E" not in text.upper()
    assert Decimal(text) == value


def test_format_decimal_keeps_every_significant_digit() -> None:
    value = Decimal("0.12345678901234567890123456789")
    assert Decimal(format_decimal(value)) == value


@settings(max_examples=50)
@given(q=ledger_quantities)
def test_format_decimal_of_parsed_text_is_stable(q: Decimal) -> None:
    text = format_decimal(q)
    assert format_decimal(parse_quantity(text)) == text
