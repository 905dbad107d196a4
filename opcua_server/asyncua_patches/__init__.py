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
fingerprints their source, so an asyncua upgrade fails there, naming each function.

Version policy: the patches are written against asyncua `PINNED_VERSION` exactly
(pyproject.toml pins it). With any other version `apply()` patches nothing, logs one
WARNING (`asyncua_patches_not_applied found=... expected=...`) and returns False:
asyncua's own, slower code runs, which is safe wherever asyncua serves no untrusted
client (address spaces built for tests, tools, the benchmarks' naive baseline). The
OPC UA server is not such a place: without `sessions`, `auth` and `limits` a client
could pass the certificate trust list with an empty or borrowed CreateSession
certificate, every login would be refused (the user manager never checks a password
on the event loop) and no connection, session or message limit would hold. So
`install_limits`, which the server calls before it opens its endpoint, raises
`UnpatchedAsyncua` (an `OpcuaServerError`) instead: the service refuses to start and
says which asyncua to install.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, Final

from asyncua.server.server import Server

from inventory_core.log import get_logger
from opcua_server.address_space import OpcuaServerError
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
    "UnpatchedAsyncua",
    "applied",
    "apply",
    "channel_client_certificate",
    "checked_login",
    "install_limits",
    "installed_version",
    "instantiate_declaration",
    "refuse_client_writes",
    "restore",
    "upstream",
]

log = get_logger(__name__)

PINNED_VERSION: Final = "2.1.0"
UNPATCHED_PATH: Final = "the unpatched (slower) path runs"
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


class _State:
    applied = False  # asyncua runs with the patches (apply() patched, restore() not since)
    warned = False  # the version WARNING was logged (once per process)


def installed_version() -> str:
    """The asyncua version installed ("unknown" when its metadata is missing)."""
    try:
        return metadata.version("asyncua")
    except metadata.PackageNotFoundError:
        return "unknown"


def apply() -> bool:
    """Install the process-wide patches (idempotent) and return True; with an asyncua
    other than `PINNED_VERSION`, patch nothing, log once and return False (see the
    module's version policy)."""
    found = installed_version()
    if found != PINNED_VERSION:
        if not _State.warned:
            _State.warned = True
            log.warning(
                "asyncua_patches_not_applied",
                found=found,
                expected=PINNED_VERSION,
                path=UNPATCHED_PATH,
                opcua_server="refuses to start",
            )
        return False
    _limits.apply()
    sessions.apply()
    data_change.apply()
    nodes.apply()
    _State.applied = True
    return True


def applied() -> bool:
    """Whether asyncua runs with the patches now."""
    return _State.applied


def restore() -> None:
    """Put asyncua's own code back everywhere `apply()` changed it (tests, comparisons
    with upstream behaviour); an address space built meanwhile keeps its shared nodes."""
    _limits.restore()
    sessions.restore()
    data_change.restore()
    nodes.restore()
    _State.applied = False


class UnpatchedAsyncua(OpcuaServerError):
    """The OPC UA server cannot run safely on this asyncua: the patches are not applied."""

    def __init__(self, found: str) -> None:
        super().__init__(
            f"asyncua {found} is installed but invops' asyncua patches are written for "
            f"{PINNED_VERSION} (pip install asyncua=={PINNED_VERSION}): without them a "
            "client could pass the certificate trust list, every login would be refused "
            "and the connection and session limits would not hold, so the OPC UA server "
            "does not start"
        )
        self.found = found


def install_limits(server: Server, limits: ServerLimits, listener: RefusalListener) -> None:
    """Bound `server` (before `server.start()`); refusals go to `listener(reason, count)`.
    Raises `UnpatchedAsyncua` when the patches cannot be applied (the version policy)."""
    if not apply():
        raise UnpatchedAsyncua(installed_version())
    _limits.install(server, limits, listener)
