"""Validation against the official B2MML V0700 XSDs, where the plant has them.

invops does not ship MESA's schemas; `[b2mml] schema_dir` (or
`INVOPS_B2MML_SCHEMA_DIR`) names the folder holding `AllSchemas.xsd` as MESA
publishes it. With it, every inbound document is validated before it is read
and a failure names the first error's path; without it, `parse_inbound`'s own
checks apply (the elements invops reads, and their values).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from inventory_core.b2mml.messages import B2mmlError, read_xml

ENTRY = "AllSchemas.xsd"
_NAMESPACE = re.compile(r"\{[^}]*\}")


class SchemaValidator:
    """The XSDs of one folder, loaded once (about two seconds)."""

    def __init__(self, folder: Path) -> None:
        entry = folder / ENTRY
        if not entry.is_file():
            raise FileNotFoundError(f"{entry} does not exist (the B2MML V0700 schema folder)")
        import xmlschema  # here, not at import: it costs every CLI command ~0.2 s otherwise

        self.folder = folder
        self._schema: Any = xmlschema.XMLSchema(str(entry))

    def validate(self, body: bytes) -> None:
        """Raise B2mmlError with the path and reason of the first schema error. The body
        is parsed here (`read_xml`: no DTDs, any encoding expat reads) and the tree is
        validated, so xmlschema never takes a body for a location to open."""
        try:
            root = read_xml(body)
        except B2mmlError as exc:  # not XML at all: the document as a whole fails
            where = "" if exc.path == "/" else f" at {exc.path}"
            raise B2mmlError(f"{exc.message}{where}") from None
        error = next(iter(self._schema.iter_errors(root)), None)
        if error is not None:
            reason = error.reason or error.message
            path = _NAMESPACE.sub("", error.path or "/")  # /ProcessMaterialLot/..., as ours
            raise B2mmlError(f"fails the B2MML schema: {reason}", path)
