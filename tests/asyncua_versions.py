"""Tests' stand-in for another asyncua release: asyncua's own code, and
`asyncua_patches.installed_version()` answering another version, for one block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from opcua_server import asyncua_patches

OTHER_RELEASE = "2.2.0"


@contextmanager
def other_asyncua_release(version: str = OTHER_RELEASE) -> Iterator[None]:
    """Unpatched asyncua claiming to be `version` inside the block (the version WARNING not
    logged yet); the patches applied again after it."""
    asyncua_patches.restore()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncua_patches, "installed_version", lambda: version)
            patch.setattr(asyncua_patches._State, "warned", False)
            yield
    finally:
        assert asyncua_patches.apply()
