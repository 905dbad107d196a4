"""One measured fix to asyncua 2.1's data-change path, applied when the server starts.

asyncua stores, per monitored item, a `copy.deepcopy` of every DataValue
written to a monitored node (`MonitoredItemValues.set_current_datavalue`), so
that a caller mutating its object later cannot change what was stored. With
10,000 monitored values at 1 Hz that deep copy is half of the server's CPU
(benchmarks/opcua_server.py, profiled with py-spy). A scalar value (number,
text, bool, time, bytes) is immutable, so copying the two small wrapper
objects gives the same protection; anything else (arrays, structures) still
gets the deep copy.
"""

from __future__ import annotations

import copy
from datetime import datetime

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemValues

_IMMUTABLE = (int, float, str, bool, bytes, datetime, type(None))
_original = MonitoredItemValues.set_current_datavalue


def _set_current_datavalue(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
    variant = cur_val.Value
    if variant is not None and isinstance(variant.Value, _IMMUTABLE):
        stored = copy.copy(cur_val)
        stored.Value = copy.copy(variant)
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = stored
        return
    _original(self, cur_val)


def apply() -> None:
    """Install the cheaper copy (idempotent)."""
    MonitoredItemValues.set_current_datavalue = _set_current_datavalue  # type: ignore[method-assign]
