"""The cheaper monitored-item copy keeps asyncua's guarantee: stored values never change."""

from __future__ import annotations

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemValues

from opcua_server import asyncua_patches


def test_scalar_values_are_stored_as_independent_copies() -> None:
    asyncua_patches.apply()
    values = MonitoredItemValues()
    written = ua.DataValue(ua.Variant(1.5, ua.VariantType.Double))
    values.set_current_datavalue(written)
    written.Value.Value = 99.0  # a careless writer mutating its object afterwards
    stored = values.get_current_datavalue()
    assert stored is not None and stored.Value is not None
    assert stored.Value.Value == 1.5
    values.set_current_datavalue(ua.DataValue(ua.Variant(2.5, ua.VariantType.Double)))
    old = values.get_old_datavalue()
    assert old is not None and old.Value is not None and old.Value.Value == 1.5


def test_arrays_are_still_deep_copied() -> None:
    asyncua_patches.apply()
    values = MonitoredItemValues()
    written = ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double))
    values.set_current_datavalue(written)
    written.Value.Value.append(3.0)
    stored = values.get_current_datavalue()
    assert stored is not None and stored.Value is not None
    assert stored.Value.Value == [1.0, 2.0]
