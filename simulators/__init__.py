"""simulators: Modbus TCP and S7 PLC simulators serving a plant model.

They take a `PlantDescription` (plain frozen dataclasses) and import only
`inventory_core` and `plc_connectors`; `invops.plant_description` builds the
description from a config. `invops simulate --config FILE` runs them; tests and
benchmarks use `Simulation`.
"""

from simulators.description import (
    LevelGauge,
    MaterialDescription,
    PlantDescription,
    TotalizerCounter,
    UnitDescription,
)
from simulators.events import EventKind, PlantEvent, parse_event
from simulators.faults import (
    MODBUS_EXCEPTION_CODES,
    FaultError,
    Faults,
    FaultSpec,
    FaultValue,
    ListenError,
    PlcFaults,
    SimulatorError,
    TagFaults,
    parse_fault,
)
from simulators.modbus_server import ModbusPlcServer
from simulators.plant import (
    DRAW_ABOVE,
    FILL_BELOW,
    HIGH_STOP,
    LOW_STOP,
    MAX_FLOW_L_PER_S,
    STATE_FORMAT,
    TRUCK_GAP_S,
    Activity,
    Operation,
    PlantModel,
    SimulatedUnit,
    to_raw,
)
from simulators.plant_state import (
    PLANT_STATE_FILE,
    SAVE_EVERY_S,
    keep_plant_state,
    load_plant_state,
    save_plant_state,
)
from simulators.runner import (
    PlcServer,
    Simulation,
    build_servers,
    check_fault_targets,
    run_simulators,
)
from simulators.s7_server import S7PlcServer

__all__ = [
    "DRAW_ABOVE",
    "FILL_BELOW",
    "HIGH_STOP",
    "LOW_STOP",
    "MAX_FLOW_L_PER_S",
    "MODBUS_EXCEPTION_CODES",
    "PLANT_STATE_FILE",
    "SAVE_EVERY_S",
    "STATE_FORMAT",
    "TRUCK_GAP_S",
    "Activity",
    "EventKind",
    "FaultError",
    "FaultSpec",
    "FaultValue",
    "Faults",
    "LevelGauge",
    "ListenError",
    "MaterialDescription",
    "ModbusPlcServer",
    "Operation",
    "PlantDescription",
    "PlantEvent",
    "PlantModel",
    "PlcFaults",
    "PlcServer",
    "S7PlcServer",
    "SimulatedUnit",
    "Simulation",
    "SimulatorError",
    "TagFaults",
    "TotalizerCounter",
    "UnitDescription",
    "build_servers",
    "check_fault_targets",
    "keep_plant_state",
    "load_plant_state",
    "parse_event",
    "parse_fault",
    "run_simulators",
    "save_plant_state",
    "to_raw",
]
