"""B2MML V0700 (MESA's ISA-95 XML) documents in and out of the ledger.

`documents` writes what invops tells ERP: `ShowMaterialInformation` (material
definitions, lots with status, quantity and storage location, one sublot per
unit where a lot is held in several) and `ShowOperationsPerformance` (the
movements after a cursor). `messages` reads what ERP tells invops: material
master data (`SyncMaterialDefinition`, `ProcessMaterialDefinition`) and lots it
announces (`SyncMaterialLot`, `ProcessMaterialLot`), and writes the answer
(`AcknowledgeMaterial...` for a Process, `ConfirmBOD` for a Sync). `schema` validates a
document against the official XSDs when the plant gives their folder.

Pure XML (the standard library's ElementTree, no DTDs or entities accepted): no
web or OPC UA code, so the CLI and the HTTP API share it.

The Business To Manufacturing Markup Language (B2MML) is used courtesy of MESA
International.
"""

from inventory_core.b2mml.documents import (
    B2MML_NAMESPACE,
    RELEASE_ID,
    material_information,
    operations_performance,
)
from inventory_core.b2mml.messages import (
    B2mmlError,
    Inbound,
    LotAnnouncement,
    MaterialUpdate,
    acknowledge,
    parse_inbound,
)
from inventory_core.b2mml.schema import SchemaValidator

__all__ = [
    "B2MML_NAMESPACE",
    "RELEASE_ID",
    "B2mmlError",
    "Inbound",
    "LotAnnouncement",
    "MaterialUpdate",
    "SchemaValidator",
    "acknowledge",
    "material_information",
    "operations_performance",
    "parse_inbound",
]
