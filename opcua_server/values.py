"""How plant view values become OPC UA values: StatusCodes, NodeIds, DataValues.

The server never sees PLC samples or ledger rows, only the plant view's unit
states, so either side can change without touching the address space code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final, cast

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from inventory_core.domain.quality import Quality

# Quality of a PLC-backed value -> OPC UA StatusCode (REFERENCE 3.4, SPEC §4).
QUALITY_STATUS: Final[Mapping[Quality, int]] = MappingProxyType(
    {
        Quality.GOOD: StatusCodes.Good,
        Quality.UNCERTAIN_LAST_USABLE: StatusCodes.UncertainLastUsableValue,
        Quality.BAD_COMMUNICATION: StatusCodes.BadCommunicationError,
        Quality.BAD_NO_COMMUNICATION: StatusCodes.BadNoCommunication,
        Quality.BAD_WAITING: StatusCodes.BadWaitingForInitialData,
    }
)


def status_code(quality: Quality) -> ua.StatusCode:
    """The StatusCode a client sees for a value of this quality."""
    return status(QUALITY_STATUS[quality])


# asyncua annotates its constructors with its own int/str/datetime subclasses
# (ua.UInt32, ua.Int16, ua.DateTime...); these helpers keep call sites typed.


def status(code: int) -> ua.StatusCode:
    """A StatusCode from one of `StatusCodes`' ints."""
    return ua.StatusCode(cast(ua.UInt32, code))


def make_node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """A numeric or string NodeId (`make_node_id(ObjectIds.Server)`, `make_node_id("a.b", ns)`)."""
    return ua.NodeId(cast("ua.Int32 | ua.String", identifier), cast(ua.Int16, namespace))


def data_value(
    value: ua.Variant, code: int, source_time: datetime | None, server_time: datetime
) -> ua.DataValue:
    """A full DataValue: value, StatusCode, source (PLC) and server timestamps."""
    return ua.DataValue(
        Value=value,
        StatusCode=status(code),
        SourceTimestamp=cast("ua.DateTime | None", source_time),
        ServerTimestamp=cast(ua.DateTime, server_time),
    )


# Plant view field -> BrowseName of the variable it feeds (instance declarations of
# TYPE_MODEL): `Measured` fields (PLC-backed) and `Book` text fields (ledger-backed).
PLC_FIELDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "level": "Level",
        "volume_l": "Volume",
        "mass_kg": "Mass",
        "fill_percent": "FillPercent",
        "quantity": "MeasuredQuantity",
    }
)
LEDGER_TEXT_FIELDS: Final[Mapping[str, str]] = MappingProxyType(
    {"material_id": "MaterialDefinitionID", "lot_id": "LotID", "status": "Status"}
)
