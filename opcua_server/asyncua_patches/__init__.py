"""Every patch invops makes to asyncua, in one place, by concern.

- `sessions`: the `UaProcessor._process_message` hook; CreateSession's client
  certificate (ignored on a None channel, must be the channel's on a secured one).
- `auth`: ActivateSession's user check awaited off the event loop (`Activation`,
  `checked_login`).
- `limits`: connection, chunk, session, subscription and monitored-item limits of a
  server (`install_limits`).
- `data_change`: the cheaper monitored-item copy, notification and encoder.
- `nodes`: shared-attribute node storage (the copied `_add_node` and attribute builders).
- `writes`: every client write refused with Bad_NotWritable (`refuse_client_writes`).
- `instantiate`: one instance declaration instantiated (`instantiate_declaration`), over
  asyncua's private `_instantiate_node`.

`apply()` installs the process-wide patches (idempotent); `install_limits(server, ...)`
and `refuse_client_writes(server)` act on one server. `upstream()` lists every asyncua
function the patches copy, wrap or rely on; tests/unit/test_asyncua_patches.py
fingerprints their source.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, Final

from asyncua.server.server import Server

from opcua_server.asyncua_patches import (
    auth,
    data_change,
    instantiate,
    nodes,
    sessions,
    writes,
)
from opcua_server.asyncua_patches import limits as _limits
from opcua_server.asyncua_patches.auth import Activation, AsyncUserManager, checked_login
from opcua_server.asyncua_patches.instantiate import instantiate_declaration
from opcua_server.asyncua_patches.sessions import channel_client_certificate
from opcua_server.asyncua_patches.writes import refuse_client_writes
from opcua_server.limits import RefusalListener, ServerLimits

__all__ = [
    "PINNED_VERSION",
    "Activation",
    "AsyncUserManager",
    "apply",
    "channel_client_certificate",
    "checked_login",
    "install_limits",
    "instantiate_declaration",
    "refuse_client_writes",
    "upstream",
]

PINNED_VERSION: Final = "2.1."
_MODULES: Final = (sessions, auth, _limits, data_change, nodes, writes, instantiate)


def upstream() -> dict[str, tuple[Callable[..., Any], tuple[str, ...]]]:
    """Every asyncua function or method the patches copy, wrap or rely on, as it was
    before any patch: dotted name -> (function, ("<module>: copied", ...))."""
    found: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {}
    for module in _MODULES:
        concern = module.__name__.rsplit(".", 1)[-1]
        for function, how in module.UPSTREAM:
            name = f"{function.__module__}.{function.__qualname__}"
            uses = found[name][1] if name in found else ()
            found[name] = (function, (*uses, f"{concern}: {how}"))
    return found


def _check_version() -> None:
    version = metadata.version("asyncua")
    if not version.startswith(PINNED_VERSION):
        raise RuntimeError(
            f"opcua_server.asyncua_patches was written for asyncua {PINNED_VERSION}x, "
            f"found {version}: check each patch against the new release, then re-pin"
        )


def apply() -> None:
    """Install the process-wide patches (idempotent). The encoder is picked up by list
    encoders built after this call (asyncua builds them on first use, i.e. at the first
    publish)."""
    _check_version()
    _limits.apply()
    sessions.apply()
    data_change.apply()
    nodes.apply()


def install_limits(server: Server, limits: ServerLimits, listener: RefusalListener) -> None:
    """Bound `server` (before `server.start()`); refusals go to `listener(reason, count)`."""
    apply()
    _limits.install(server, limits, listener)
