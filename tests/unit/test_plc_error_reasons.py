"""plc_connectors.ERROR_REASONS is exactly the set of labels `error_reason()` can return."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import plc_connectors
from plc_connectors import (
    ERROR_REASONS,
    PlcConnectError,
    PlcError,
    PlcProtocolError,
    PlcTimeout,
    TagConfigError,
    error_reason,
)
from plc_connectors.errors import MODBUS_EXCEPTION_NAMES


def _families(root: type[PlcError] = PlcError) -> Iterator[type[PlcError]]:
    yield root
    for sub in root.__subclasses__():
        yield from _families(sub)


def _every_error() -> Iterator[PlcError]:
    """One instance of every PlcError family plc_connectors defines, in every variant that
    `error_reason()` tells apart: a protocol error with each possible Modbus exception
    code (one byte) and without one, retryable or not."""
    families = [f for f in _families() if f.__module__.startswith("plc_connectors.")]
    assert {PlcError, PlcConnectError, PlcTimeout, PlcProtocolError, TagConfigError} <= set(
        families
    )
    for family in families:
        if issubclass(family, PlcProtocolError):
            for code in (None, *range(256)):
                for retryable in (False, True):
                    yield family("x", exception_code=code, retryable=retryable)
        else:
            yield family("x")


def test_every_reason_error_reason_returns_is_in_the_list() -> None:
    reasons = {error_reason(exc) for exc in _every_error()}
    assert reasons <= set(ERROR_REASONS), reasons - set(ERROR_REASONS)


def test_every_listed_reason_is_returned_for_some_error() -> None:
    reasons = {error_reason(exc) for exc in _every_error()}
    assert set(ERROR_REASONS) <= reasons, set(ERROR_REASONS) - reasons


def test_a_foreign_plc_error_subclass_is_other() -> None:
    class VendorError(PlcError):
        pass

    assert error_reason(VendorError("x")) == "other"
    assert "other" in ERROR_REASONS


def test_the_list_is_the_families_plus_each_defined_modbus_exception_code() -> None:
    assert ERROR_REASONS == (
        "timeout",
        "connect",
        "exception_01",
        "exception_02",
        "exception_03",
        "exception_04",
        "exception_05",
        "exception_06",
        "exception_07",
        "exception_08",
        "exception_0a",
        "exception_0b",
        "decode",
        "protocol",
        "config",
        "other",
    )
    assert len(set(ERROR_REASONS)) == len(ERROR_REASONS)
    assert plc_connectors.ERROR_REASONS is ERROR_REASONS


@pytest.mark.parametrize("code", sorted(MODBUS_EXCEPTION_NAMES))
def test_a_defined_modbus_exception_keeps_its_code(code: int) -> None:
    exc = PlcProtocolError.from_modbus_exception(code, "PLC-MB read hr:0+2")
    assert error_reason(exc) == f"exception_{code:02x}"


@pytest.mark.parametrize("code", [0x00, 0x09, 0x0C, 0x80, 0xFF])
def test_a_modbus_exception_code_outside_the_spec_is_protocol(code: int) -> None:
    exc = PlcProtocolError.from_modbus_exception(code, "PLC-MB read hr:0+2")
    assert error_reason(exc) == "protocol"
