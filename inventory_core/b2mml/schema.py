"""Validation against the official B2MML V0700 XSDs, where the plant has them.

invops does not ship MESA's schemas; `[b2mml] schema_dir` (or
`INVOPS_B2MML_SCHEMA_DIR`) names the folder holding `AllSchemas.xsd` as MESA
publishes it. With it, every inbound document is validated before it is read
and a failure names the first error's path; without it, `parse_inbound`'s own
checks apply (the elements invops reads, and their values).
"""

from __future__ import annotations

from pathlib import Path

import xmlschema

from inventory_core.b2mml.messages import B2mmlError

ENTRY = "AllSchemas.xsd"


class SchemaValidator:
    """The XSDs of one folder, loaded once (about two seconds)."""

    def __init__(self, folder: Path) -> None:
        entry = folder / ENTRY
        if not entry.is_file():
            raise FileNotFoundError(f"{entry} does not exist (the B2MML V0700 schema folder)")
        self.folder = folder
        self._schema = xmlschema.XMLSchema(str(entry))

    def validate(self, body: bytes) -> None:
        """Raise B2mmlError with the path and reason of the first schema error."""
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise B2mmlError("DTDs and entity declarations are not accepted")
        try:
            error = next(iter(self._schema.iter_errors(body.decode("utf-8"))), None)
        except UnicodeDecodeError as exc:
            raise B2mmlError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
        except xmlschema.XMLResourceError as exc:
            raise B2mmlError(f"not well-formed XML ({exc})") from None
        except Exception as exc:  # an ElementTree ParseError from the resource loader
            raise B2mmlError(f"not well-formed XML ({exc})") from None
        if error is not None:
            reason = error.reason or error.message
            raise B2mmlError(f"fails the B2MML schema: {reason}", error.path or "/")
