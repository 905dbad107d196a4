"""A listener that cannot bind: the message says why (from the errno behind the error)."""

from __future__ import annotations

import errno

import pytest

from invops.listen_errors import listen_errno, listen_failure, listen_reason


class _WrappedError(Exception):
    """Stands for SimulatorError, OpcuaServerError, HttpEndpointError: `raise ... from OSError`."""


def _wrapped(code: int) -> _WrappedError:
    try:
        try:
            raise OSError(code, "bind failed")
        except OSError as cause:
            raise _WrappedError("cannot listen") from cause
    except _WrappedError as exc:
        return exc


def test_the_errno_is_found_behind_the_error_that_wraps_it() -> None:
    assert listen_errno(_wrapped(errno.EACCES)) == errno.EACCES
    assert listen_errno(OSError(errno.EADDRINUSE, "in use")) == errno.EADDRINUSE
    assert listen_errno(_WrappedError("no cause")) is None


@pytest.mark.parametrize(
    ("code", "port", "words"),
    [
        (errno.EADDRINUSE, 5020, "already in use"),
        (errno.EACCES, 502, "permission denied: ports below 1024 need root"),
        (errno.EACCES, 5020, "permission denied"),
        (errno.EADDRNOTAVAIL, 5020, "not one of this machine's"),
        (None, 5020, "in use or not available"),
    ],
)
def test_the_reason_names_the_cause(code: int | None, port: int, words: str) -> None:
    assert words in listen_reason(code, port)


def test_in_use_and_permission_denied_read_differently() -> None:
    assert "permission" not in listen_reason(errno.EADDRINUSE, 502)
    assert "in use" not in listen_reason(errno.EACCES, 502)
    assert "below 1024" not in listen_reason(errno.EACCES, 5020)


def test_the_failure_is_one_line_with_the_remedy() -> None:
    line = listen_failure("PLC-MODBUS", "127.0.0.1", 502, _wrapped(errno.EACCES), "use --port X")
    assert line == (
        "PLC-MODBUS cannot listen on 127.0.0.1:502: permission denied: ports below 1024 need "
        "root (or CAP_NET_BIND_SERVICE); use --port X"
    )
    assert "\n" not in line
