"""Where the tests find the official standards files (data, never copied into invops).

The folder is `$INVOPS_STANDARDS_DIR` when set, else `<repo>/../shared/standards`
(next to the checkout), else `/work/shared/standards`. Tests that need a file from it
skip, saying which file is missing and how to provide it (see `require_b2mml`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from inventory_core.b2mml import SchemaValidator

REPO = Path(__file__).resolve().parents[1]
ENV = "INVOPS_STANDARDS_DIR"
B2MML_FOLDER = "b2mml-v0700"
B2MML_ENTRY = "AllSchemas.xsd"


def candidates() -> list[Path]:
    """The folders looked at, in order (the environment variable wins when set)."""
    if env := os.environ.get(ENV):
        return [Path(env)]
    return [REPO.parent / "shared" / "standards", Path("/work/shared/standards")]


def standards_dir() -> Path | None:
    """The first candidate folder that exists, else None."""
    return next((folder for folder in candidates() if folder.is_dir()), None)


def b2mml_schema_dir() -> Path | None:
    """The folder holding MESA's B2MML V0700 `AllSchemas.xsd`, else None."""
    for folder in candidates():
        schemas = folder / B2MML_FOLDER
        if (schemas / B2MML_ENTRY).is_file():
            return schemas
    return None


def b2mml_missing_reason() -> str:
    """Why the B2MML schemas are not available, and how to provide them."""
    looked = ", ".join(str(folder / B2MML_FOLDER / B2MML_ENTRY) for folder in candidates())
    return (
        f"MESA's B2MML V0700 schemas are missing: no {B2MML_ENTRY} at {looked}; "
        f"set {ENV} to a folder holding {B2MML_FOLDER}/{B2MML_ENTRY} "
        "(the official XSDs as MESA publishes them, see ../shared/standards/README.md)"
    )


def require_b2mml() -> Path:
    """The B2MML schema folder, or skip the calling test with the reason."""
    folder = b2mml_schema_dir()
    if folder is None:
        pytest.skip(b2mml_missing_reason())
    return folder


@functools.cache
def _validator(folder: Path) -> SchemaValidator:
    from inventory_core.b2mml import SchemaValidator

    return SchemaValidator(folder)  # ~2.5 s: once per session and folder


def b2mml_validator() -> SchemaValidator:
    """The validator of the official XSDs (loaded once per session), or skip."""
    return _validator(require_b2mml())


def assert_valid_b2mml(body: bytes) -> None:
    """`body` validates against MESA's XSDs (skips the test without them)."""
    from inventory_core.b2mml import B2mmlError

    try:
        b2mml_validator().validate(body)
    except B2mmlError as exc:
        pytest.fail(f"invalid B2MML: {exc}\n{body.decode('utf-8', 'replace')}")


def validate_b2mml_if_present(body: bytes) -> bool:
    """Validate `body` when the XSDs are here (fail when invalid); without them, do
    nothing and return False, so that a test's other checks still run."""
    if b2mml_schema_dir() is None:
        return False
    assert_valid_b2mml(body)
    return True
