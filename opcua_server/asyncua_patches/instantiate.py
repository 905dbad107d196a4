"""One instance declaration of a type, instantiated as the type declares it.

asyncua's public `instantiate(parent, node_type)` instantiates a *type*: it makes the
type the new node's TypeDefinition. Adding one optional child that a type declares
(a level alarm's ConfirmedState, Confirm, HighLimit...) needs the declaration's own
reference description (its reference type, its type definition), which only
asyncua's private `instantiate_util._instantiate_node` takes. Its use is kept here, with
the patches, so that the fingerprint test guards it too.
"""

from __future__ import annotations

from typing import Any, Final

from asyncua import ua
from asyncua.common import instantiate_util
from asyncua.common.node_factory import make_node
from asyncua.server.server import Server

_instantiate_node: Any = getattr(instantiate_util, "_instantiate_node", None)

# What this module wraps (fingerprinted: tests/unit/test_asyncua_patches.py).
UPSTREAM: Final = ((_instantiate_node, "wrapped"),) if _instantiate_node is not None else ()


async def instantiate_declaration(
    server: Server,
    declaration: ua.ReferenceDescription,
    parent_id: ua.NodeId,
    nodeid: ua.NodeId,
    *,
    instantiate_optional: bool = False,
) -> list[ua.NodeId]:
    """Instantiate `declaration` (a child description of a type node) under `parent_id`
    as `nodeid`, with the declaration's browse name; the NodeIds added."""
    if _instantiate_node is None:
        raise RuntimeError("asyncua has no instantiate_util._instantiate_node any more")
    session = server.iserver.isession
    added: list[ua.NodeId] = await _instantiate_node(
        session,
        make_node(session, declaration.NodeId),
        parent_id,
        declaration,
        nodeid=nodeid,
        bname=declaration.BrowseName,
        instantiate_optional=instantiate_optional,
    )
    return added
