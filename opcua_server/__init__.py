"""opcua_server: the asyncua adapter that shows inventory over OPC UA (SPEC §4).

`InvopsOpcUaServer` builds the address space from `information_model.TYPE_MODEL`
and the config, writes the plant view's unit states (`view=`),
serves the Ledger methods and raises a movement event for every posting.
"""

from opcua_server.address_space import (
    AddressSpace,
    LotNodes,
    NodeWriter,
    OpcuaServerError,
    UnitNodes,
    build_address_space,
    eu_information,
    load_type_model,
    node_id_text,
)
from opcua_server.events import LedgerMirror, movement_message
from opcua_server.limits import REFUSAL_REASONS, RefusalListener, ServerLimits
from opcua_server.methods import CurrentUser, LedgerMethods, default_current_user
from opcua_server.server import Feature, InvopsOpcUaServer
from opcua_server.values import QUALITY_STATUS, status_code

__all__ = [
    "QUALITY_STATUS",
    "REFUSAL_REASONS",
    "AddressSpace",
    "CurrentUser",
    "Feature",
    "InvopsOpcUaServer",
    "LedgerMethods",
    "LedgerMirror",
    "LotNodes",
    "NodeWriter",
    "OpcuaServerError",
    "RefusalListener",
    "ServerLimits",
    "UnitNodes",
    "build_address_space",
    "default_current_user",
    "eu_information",
    "load_type_model",
    "movement_message",
    "node_id_text",
    "status_code",
]
