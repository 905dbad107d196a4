"""One line for a listener that cannot bind its address: where, why, and how to move it.

A port taken by another process and a port below 1024 without the right to
bind it need different fixes, so the message names the cause (from the errno
of the OSError behind the error) and the option that moves the listener.
"""

from __future__ import annotations

import errno
import os

__all__ = ["listen_errno", "listen_failure", "listen_reason"]

PRIVILEGED_PORTS_BELOW = 1024


def listen_errno(exc: BaseException) -> int | None:
    """The errno of the first OSError in `exc`'s chain of causes, None if there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def listen_reason(code: int | None, port: int) -> str:
    """Why binding `port` failed, in words a user can act on."""
    if code == errno.EADDRINUSE:
        return "the port is already in use (another invops, or another server)"
    if code == errno.EACCES:
        if 0 < port < PRIVILEGED_PORTS_BELOW:
            return (
                f"permission denied: ports below {PRIVILEGED_PORTS_BELOW} need root "
                "(or CAP_NET_BIND_SERVICE)"
            )
        return "permission denied"
    if code == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's"
    if code is not None:
        return os.strerror(code).lower()
    return "the address is in use or not available"


def listen_failure(what: str, host: str, port: int, exc: BaseException, remedy: str) -> str:
    """`<what> cannot listen on host:port: <why>; <remedy>`, one line."""
    why = listen_reason(listen_errno(exc), port)
    return f"{what} cannot listen on {host}:{port}: {why}; {remedy}"
