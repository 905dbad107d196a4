"""Client writes refused with Bad_NotWritable (SPEC §4: all changes go through methods).

asyncua answers a write to a read-only variable with Bad_UserAccessDenied, and
lets an Admin-role session write anything regardless of AccessLevel. So the
server's attribute service is wrapped (on that server's instance only): writes
from the server's own internal session pass; a client's Value write passes only
to a variable whose AccessLevel has CurrentWrite (none in invops), everything
else is refused.
"""

from __future__ import annotations

from typing import Any, Final

from asyncua import ua
from asyncua.server.address_space import AttributeService
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

# What this module wraps (fingerprinted: tests/unit/test_asyncua_patches.py): `write`
# takes the user as its second argument, the internal session's user by default.
UPSTREAM: Final = ((AttributeService.write, "wrapped"),)


def refuse_client_writes(server: Server) -> None:
    """Answer every client write to `server` with Bad_NotWritable (see the module)."""
    service = server.iserver.attribute_service
    original = service.write
    internal_user = server.iserver.isession.user
    aspace = server.iserver.aspace

    async def write(params: ua.WriteParameters, user: Any = internal_user) -> list[ua.StatusCode]:
        if user is internal_user:
            return await original(params, user)
        results: list[ua.StatusCode | None] = []
        allowed: list[ua.WriteValue] = []
        for item in params.NodesToWrite:
            if aspace.get(item.NodeId) is None:
                results.append(_status(StatusCodes.BadNodeIdUnknown))
            elif item.AttributeId == AttributeIds.Value and _writable(aspace, item.NodeId):
                results.append(None)
                allowed.append(item)
            else:
                results.append(_status(StatusCodes.BadNotWritable))
        if allowed:
            done = iter(await original(ua.WriteParameters(NodesToWrite=allowed), user))
            return [r if r is not None else next(done) for r in results]
        return [r for r in results if r is not None]

    setattr(service, "write", write)  # noqa: B010 - instance attribute shadows the method


def _writable(aspace: Any, node_id: ua.NodeId) -> bool:
    access = aspace.read_attribute_value(node_id, AttributeIds.AccessLevel)
    level = access.Value.Value if access.Value is not None else None
    return isinstance(level, int) and bool(level & ua.AccessLevel.CurrentWrite.mask)


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))
