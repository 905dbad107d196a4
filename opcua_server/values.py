"""What the OPC UA server shows for a storage unit, as plain data.

The PLC pipeline and the ledger mirror hand the server `UnitValues`; the server
never sees PLC samples or ledger rows, so either side can change without
touching the address space code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
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


@dataclass(frozen=True, slots=True)
class UnitValues:
    """An update of one storage unit's variables; every `None` field means "unchanged".

    PLC-backed values (`level`, `volume_l`, `mass_kg`, `fill_percent`,
    `measured_quantity`, and `discrepancy`) share `quality` and `source_time`
    (the PLC read time):

    - GOOD: the given values are written as Good; omitted ones are left alone.
    - UNCERTAIN_LAST_USABLE: given values are written, and every PLC-backed
      value of the unit keeps its last value but turns Uncertain_LastUsableValue.
    - BAD_*: every PLC-backed value of the unit becomes null with that Bad code.

    Ledger-backed values (`book_quantity`, `material_id`, `lot_id`, `status`) are
    always Good; `""` means "none" (an empty unit). `discrepancy` left `None` is
    derived by the server as MeasuredQuantity - BookQuantity.

    Units: `level` in the level tag's unit (mm in the demo), `volume_l` litres,
    `mass_kg` kilograms, `fill_percent` 0..100, quantities in the material's base unit.
    """

    unit: str
    source_time: datetime
    quality: Quality = Quality.GOOD
    level: float | None = None
    volume_l: float | None = None
    mass_kg: float | None = None
    fill_percent: float | None = None
    measured_quantity: float | None = None
    book_quantity: float | None = None
    discrepancy: float | None = None
    material_id: str | None = None
    lot_id: str | None = None
    status: str | None = None

    def merged(self, newer: UnitValues) -> UnitValues:
        """This update overlaid by a newer one for the same unit (queue coalescing)."""
        changes = {
            f.name: value
            for f in fields(newer)
            if f.name not in ("unit",) and (value := getattr(newer, f.name)) is not None
        }
        return replace(self, **changes)


# UnitValues field -> BrowseName of the variable it feeds (instance declarations of TYPE_MODEL).
PLC_FIELDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "level": "Level",
        "volume_l": "Volume",
        "mass_kg": "Mass",
        "fill_percent": "FillPercent",
        "measured_quantity": "MeasuredQuantity",
    }
)
LEDGER_NUMBER_FIELDS: Final[Mapping[str, str]] = MappingProxyType({"book_quantity": "BookQuantity"})
LEDGER_TEXT_FIELDS: Final[Mapping[str, str]] = MappingProxyType(
    {"material_id": "MaterialDefinitionID", "lot_id": "LotID", "status": "Status"}
)
