"""PLC errors: one root so pollers catch `PlcError`, families so they can decide how to retry.

`retryable` tells the poller whether a fast retry can help (timeouts, busy devices) or
whether the problem is configuration (unmapped address, unsupported function, bad tag).
"""

from __future__ import annotations

from typing import Self

# REFERENCE 4.3. 01-03 are configuration problems; the rest are device/gateway states.
MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    0x01: "Illegal Function",
    0x02: "Illegal Data Address",
    0x03: "Illegal Data Value",
    0x04: "Server Device Failure",
    0x05: "Acknowledge",
    0x06: "Server Device Busy",
    0x07: "Negative Acknowledge",
    0x08: "Memory Parity Error",
    0x0A: "Gateway Path Unavailable",
    0x0B: "Gateway Target Device Failed to Respond",
}
# 04/06/0B per REFERENCE 4.3; 05 ("poll later") and 0A (gateway overloaded) retry too.
RETRYABLE_MODBUS_EXCEPTIONS: frozenset[int] = frozenset({0x04, 0x05, 0x06, 0x0A, 0x0B})


class PlcError(Exception):
    """Raised by any PLC link operation that failed; the root pollers catch."""

    retryable: bool = True


class PlcConnectError(PlcError):
    """Raised when the TCP/ISO connection to a PLC cannot be opened or is lost."""


class PlcTimeout(PlcError):
    """Raised when a PLC request gets no answer within its deadline."""


class PlcProtocolError(PlcError):
    """Raised when the PLC answers with an error or a malformed/short response."""

    def __init__(
        self, message: str, *, exception_code: int | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.exception_code = exception_code
        self.retryable = retryable

    @classmethod
    def from_modbus_exception(cls, code: int, where: str) -> Self:
        """Build the error for a Modbus exception response, e.g. `where="plc1 read hr:10"`."""
        name = MODBUS_EXCEPTION_NAMES.get(code, "unknown exception")
        return cls(
            f"{where}: Modbus exception {code:02X} ({name})",
            exception_code=code,
            retryable=code in RETRYABLE_MODBUS_EXCEPTIONS,
        )


class TagConfigError(PlcError, ValueError):
    """Raised when a tag or address cannot work (bad syntax, type/area mismatch, out of range).

    Also a ValueError so pydantic validators can call the parsers directly and report
    the message under the config key path.
    """

    retryable = False
