"""Pure domain model of inventory operations: no I/O, no third-party libraries."""

from inventory_core.domain.errors import *  # noqa: F403
from inventory_core.domain.model import *  # noqa: F403
