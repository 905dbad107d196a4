"""The data-change path, profiled with benchmarks/opcua_server.py (10,000 values at 1 Hz).

- `MonitoredItemValues.set_current_datavalue` stores a `copy.deepcopy` of every
  DataValue written to a monitored node, so that a caller mutating its object
  later cannot change what was stored: half of the server's CPU. A scalar value
  (number, text, bool, time, bytes) is immutable, so copying the two small
  wrapper objects (DataValue, Variant) slot by slot gives the same protection
  at a fraction of the cost (`copy.copy` of them costs twice as much again);
  anything else (arrays, structures) still gets the deep copy.
- `MonitoredItemService.datachange_callback` builds each notification as
  `MonitoredItemNotification()` and then sets its fields; the dataclass default
  builds a throwaway `DataValue()` (a Variant with type guessing) first, which
  was a quarter of the server's CPU. The replacement passes the fields to the
  constructor and is otherwise the same code.
- Publishing serializes every notification through asyncua's generic dataclass
  encoder (a getattr and a closure per field, per nesting level): the largest
  cost left. `notification_to_binary` encodes MonitoredItemNotification
  directly, byte for byte what the generic encoder produces (tests compare them
  on generated values); DataValues with picoseconds take the generic path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues
from asyncua.ua import ua_binary

_T = TypeVar("_T")
_IMMUTABLE = (int, float, str, bool, bytes, datetime, type(None))
_original_set = MonitoredItemValues.set_current_datavalue
_original_datachange_callback = MonitoredItemService.datachange_callback
_original_type_serializer = ua_binary.create_type_serializer

# What this module copies, wraps or relies on (fingerprinted: tests/unit/test_asyncua_patches.py).
UPSTREAM: Final = (
    (_original_set, "wrapped"),
    (_original_datachange_callback, "copied"),
    (_original_type_serializer, "wrapped"),
    # The generic encoder the direct one reproduces (the two types' fields in this order,
    # DataValue's encoding mask), and the list encoder that looks the element encoder up
    # (through the module's create_type_serializer) on its first call.
    (ua_binary.create_dataclass_serializer, "relied on"),
    (ua_binary.create_list_serializer, "relied on"),
    (ua.DataValue, "relied on"),
    (ua.MonitoredItemNotification, "relied on"),
)


def _shallow_copy(obj: _T) -> _T:
    """A new instance with the same field values (asyncua's types are slots dataclasses)."""
    cls = type(obj)
    new = object.__new__(cls)
    for name in cls.__slots__:  # type: ignore[attr-defined]
        object.__setattr__(new, name, getattr(obj, name))
    return new


def _set_current_datavalue(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
    variant = cur_val.Value
    if variant is not None and isinstance(variant.Value, _IMMUTABLE):
        stored = _shallow_copy(cur_val)
        stored.Value = _shallow_copy(variant)
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = stored
        return
    _original_set(self, cur_val)


async def _datachange_callback(
    self: MonitoredItemService,
    handle: int,
    value: ua.DataValue,
    error: ua.StatusCode | None = None,
) -> None:
    if error:
        self.logger.info(
            "subscription %s: datachange callback called with handle '%s' and error '%s'",
            self,
            handle,
            error,
        )
        await self.trigger_statuschange(error)
        return
    mid = self._monitored_datachange[handle]
    mdata = self._monitored_items[mid]
    if mdata.mode == ua.MonitoringMode.Disabled:
        return
    mdata.mvalue.set_current_datavalue(value)
    if mdata.filter:
        passes = self._is_data_changed(
            mdata.mvalue, mdata.filter.Trigger
        ) and self._is_deadband_exceeded(mdata.mvalue, mdata.filter)
    else:
        passes = self._is_data_changed(mdata.mvalue, ua.DataChangeTrigger.StatusValue)
    if passes:
        event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
        await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)


_UINT32 = ua_binary.Primitives.UInt32.pack
_DATETIME = ua_binary.Primitives.DateTime.pack
_generic_notification = ua_binary.create_dataclass_serializer(ua.MonitoredItemNotification)


def notification_to_binary(item: ua.MonitoredItemNotification) -> bytes:
    """OPC UA binary of one MonitoredItemNotification (ClientHandle, DataValue), in the
    field order and with the encoding mask asyncua's generic encoder uses."""
    dv = item.Value
    if dv.SourcePicoseconds is not None or dv.ServerPicoseconds is not None:
        return _generic_notification(item)
    mask = 0
    parts = [_UINT32(item.ClientHandle), b""]
    if dv.Value is not None:
        mask |= 0x01
        parts.append(ua_binary.variant_to_binary(dv.Value))
    if dv.StatusCode is not None:
        mask |= 0x02
        parts.append(_UINT32(dv.StatusCode.value))
    if dv.SourceTimestamp is not None:
        mask |= 0x04
        parts.append(_DATETIME(dv.SourceTimestamp))
    if dv.ServerTimestamp is not None:
        mask |= 0x08
        parts.append(_DATETIME(dv.ServerTimestamp))
    parts[1] = bytes((mask,))
    return b"".join(parts)


def _create_type_serializer(uatype: type) -> Callable[[Any], bytes]:
    if uatype is ua.MonitoredItemNotification:
        return notification_to_binary
    return _original_type_serializer(uatype)


def apply() -> None:
    """Install the three (idempotent); the encoder holds from this call on."""
    MonitoredItemValues.set_current_datavalue = _set_current_datavalue  # type: ignore[method-assign]
    MonitoredItemService.datachange_callback = _datachange_callback  # type: ignore[method-assign]
    _use_type_serializer(_create_type_serializer)


def restore() -> None:
    """Put asyncua's own code back (tests, comparisons with upstream)."""
    MonitoredItemValues.set_current_datavalue = _original_set  # type: ignore[method-assign]
    MonitoredItemService.datachange_callback = _original_datachange_callback  # type: ignore[method-assign]
    _use_type_serializer(_original_type_serializer)


def _use_type_serializer(create: Callable[[type], Callable[[Any], bytes]]) -> None:
    if ua_binary.create_type_serializer is create:
        return
    ua_binary.create_type_serializer = create  # type: ignore[assignment]
    # asyncua caches the encoders it builds, and a list encoder keeps the element encoder
    # it looked up at its first call: dropped, so that encoders built before this change
    # (a client in the same process, an earlier publish) follow it too.
    ua_binary.create_dataclass_serializer.cache_clear()
    ua_binary.create_list_serializer.cache_clear()
