"""Fault injection shared by the PLC simulators: what is wrong with which PLC or tag.

PLC faults (target: a PLC name):

* `refuse`: stop listening; connections are refused and existing ones closed;
* `drop`: close every connection (and any new one at its first request);
* `delay_s`: answer every request that much later;
* `freeze`: values stop updating (the plant keeps moving underneath);
* `exception`: Modbus only, answer every request with this exception code.

Tag faults (target: a tag name `<unit>.<role>`):

* `spike`: multiply the reading noise of a level/weight tag by this factor;
* `totalizer_jump`: add this many counts to a totalizer, once (e.g. past its rollover).

Command-line form (`invops simulate --fault SPEC`): `TARGET:FAULT[=VALUE][,FAULT[=VALUE]]`,
for example `PLC-MODBUS:delay=0.5`, `PLC-S7:refuse`, `PLC-MODBUS:exception=2`,
`TK-101.level:spike=20`, `TK-101.totalizer:jump=4294967000`.

`Faults` is changed from the event loop's thread; servers read snapshots
(frozen dataclasses, replaced as a whole) from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

__all__ = [
    "MODBUS_EXCEPTION_CODES",
    "FaultError",
    "FaultSpec",
    "FaultValue",
    "Faults",
    "ListenError",
    "PlcFaults",
    "SimulatorError",
    "TagFaults",
    "parse_fault",
]

FaultValue = bool | int | float

# Modbus exception codes a server may answer with (REFERENCE 4.3).
MODBUS_EXCEPTION_CODES: Final = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 10, 11})

_PLC_FAULTS: Final = ("refuse", "drop", "delay_s", "freeze", "exception")
_TAG_FAULTS: Final = ("spike", "totalizer_jump")
# Command-line spelling -> keyword of Faults.set.
_SPEC_NAMES: Final[Mapping[str, str]] = {
    "refuse": "refuse",
    "drop": "drop",
    "delay": "delay_s",
    "delay_s": "delay_s",
    "freeze": "freeze",
    "exception": "exception",
    "spike": "spike",
    "jump": "totalizer_jump",
    "totalizer_jump": "totalizer_jump",
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class SimulatorError(Exception):
    """Raised when the simulators cannot run as asked (bad port, bad fault, bind failure)."""


class ListenError(SimulatorError):
    """Raised when a simulated PLC cannot listen on its address; `errno` says why
    (EADDRINUSE: port taken, EACCES: a port below 1024 without the right to bind it)."""

    def __init__(self, plc: str, host: str, port: int, cause: OSError) -> None:
        self.plc = plc
        self.host = host
        self.port = port
        self.errno = cause.errno
        super().__init__(f"{plc}: cannot listen on {host}:{port}: {cause}")


class FaultError(SimulatorError, ValueError):
    """Raised for a fault spec, name or value that cannot be applied."""


@dataclass(frozen=True, slots=True)
class PlcFaults:
    """The faults of one PLC; the default is a healthy PLC."""

    refuse: bool = False
    drop: bool = False
    delay_s: float = 0.0
    freeze: bool = False
    exception: int | None = None  # Modbus exception code for every request


@dataclass(frozen=True, slots=True)
class TagFaults:
    """The faults of one tag; `spike` multiplies its reading noise."""

    spike: float = 1.0


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One parsed `--fault` option: a target and its fault keywords."""

    target: str
    values: tuple[tuple[str, FaultValue], ...]

    def as_kwargs(self) -> dict[str, FaultValue]:
        return dict(self.values)


_HEALTHY_PLC: Final = PlcFaults()
_HEALTHY_TAG: Final = TagFaults()


class Faults:
    """Current faults per PLC and tag, with change notification for the servers."""

    def __init__(self) -> None:
        self._plcs: dict[str, PlcFaults] = {}
        self._tags: dict[str, TagFaults] = {}
        self._jumps: dict[str, int] = {}
        self._listeners: list[asyncio.Event] = []

    # ------------------------------------------------------------------ reading

    def plc(self, name: str) -> PlcFaults:
        return self._plcs.get(name, _HEALTHY_PLC)

    def tag(self, name: str) -> TagFaults:
        return self._tags.get(name, _HEALTHY_TAG)

    def spike_factors(self) -> dict[str, float]:
        """Noise factor per tag, for `PlantModel.tag_values`."""
        return {name: tag.spike for name, tag in self._tags.items() if tag.spike != 1.0}

    def take_jumps(self) -> dict[str, int]:
        """Pending totalizer jumps (tag -> counts), handed out once."""
        jumps, self._jumps = self._jumps, {}
        return jumps

    def targets(self) -> tuple[set[str], set[str]]:
        """(PLC names, tag names) that have any fault set or pending."""
        return set(self._plcs), set(self._tags) | set(self._jumps)

    def check_targets(
        self, plcs: Iterable[str], tags: Iterable[str], totalizers: Iterable[str]
    ) -> None:
        """Raise FaultError naming every fault target the plant does not have."""
        plc_names, tag_names = set(plcs), set(tags)
        problems = [f"unknown PLC {name!r}" for name in sorted(set(self._plcs) - plc_names)]
        problems += [f"unknown tag {name!r}" for name in sorted(set(self._tags) - tag_names)]
        problems += [
            f"{name!r} is not a totalizer tag"
            for name in sorted(set(self._jumps) - set(totalizers))
        ]
        if problems:
            raise FaultError("; ".join(problems))

    # ------------------------------------------------------------------ changing

    def set(self, target: str, **fault: FaultValue) -> None:
        """Add or change faults of one PLC or tag, e.g. `set("PLC-S7", refuse=True)`,
        `set("TK-101.level", spike=20)`, `set("TK-101.totalizer", totalizer_jump=2**32 - 100)`.
        Keywords: refuse, drop, delay_s, freeze, exception (PLC); spike, totalizer_jump (tag)."""
        if not target:
            raise FaultError("a fault needs a target (PLC name or tag name)")
        plc_changes = {k: _plc_value(k, v) for k, v in fault.items() if k in _PLC_FAULTS}
        tag_changes = {k: _tag_value(k, v) for k, v in fault.items() if k in _TAG_FAULTS}
        unknown = sorted(set(fault) - set(plc_changes) - set(tag_changes))
        if unknown:
            allowed = ", ".join((*_PLC_FAULTS, *_TAG_FAULTS))
            raise FaultError(f"unknown fault {', '.join(unknown)} (known: {allowed})")
        if plc_changes and tag_changes:
            raise FaultError(f"{target}: PLC faults and tag faults cannot share a target")
        if plc_changes:
            self._plcs[target] = replace(self.plc(target), **plc_changes)  # type: ignore[arg-type]
        jump = tag_changes.pop("totalizer_jump", None)
        if jump is not None:
            self._jumps[target] = self._jumps.get(target, 0) + int(jump)
        if tag_changes:
            self._tags[target] = replace(self.tag(target), **tag_changes)
        self._notify()

    def apply(self, spec: FaultSpec) -> None:
        self.set(spec.target, **spec.as_kwargs())

    def clear(self, target: str | None = None) -> None:
        """Heal one PLC or tag (pending jumps included), or everything with no target."""
        if target is None:
            self._plcs.clear()
            self._tags.clear()
            self._jumps.clear()
        else:
            self._plcs.pop(target, None)
            self._tags.pop(target, None)
            self._jumps.pop(target, None)
        self._notify()

    # ------------------------------------------------------------------ notification

    def subscribe(self) -> asyncio.Event:
        """An event set on every change (clear it after waking up)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        if event in self._listeners:
            self._listeners.remove(event)

    def _notify(self) -> None:
        for event in self._listeners:
            event.set()

    def __repr__(self) -> str:
        return f"Faults(plcs={self._plcs!r}, tags={self._tags!r}, jumps={self._jumps!r})"


def _plc_value(key: str, value: FaultValue) -> FaultValue | None:
    if key in ("refuse", "drop", "freeze"):
        if not isinstance(value, bool):
            raise FaultError(f"{key} must be true or false (got {value!r})")
        return value
    if key == "delay_s":
        delay = float(value)
        if not math.isfinite(delay) or not 0 <= delay <= 3600:
            raise FaultError(f"delay must be 0 to 3600 seconds (got {value!r})")
        return delay
    # exception: a Modbus exception code, 0/False = none
    if isinstance(value, float) and not value.is_integer():
        raise FaultError(f"exception must be a Modbus exception code (got {value!r})")
    code = int(value)
    if code == 0:
        return None
    if code not in MODBUS_EXCEPTION_CODES:
        known = ", ".join(str(c) for c in sorted(MODBUS_EXCEPTION_CODES))
        raise FaultError(f"exception code {code} is not a Modbus exception code ({known})")
    return code


def _tag_value(key: str, value: FaultValue) -> FaultValue:
    if key == "spike":
        factor = float(value)
        if not math.isfinite(factor) or factor < 0:
            raise FaultError(f"spike must be a factor >= 0 (got {value!r})")
        return factor
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise FaultError(f"jump must be a whole number of counts (got {value!r})")
    return int(value)


def parse_fault(text: str) -> FaultSpec:
    """`TARGET:FAULT[=VALUE][,FAULT[=VALUE]]` -> FaultSpec (values checked as by Faults.set).

    A fault without a value means true (`PLC-S7:refuse`); `delay` is `delay_s`
    and `jump` is `totalizer_jump`.
    """
    target, colon, rest = text.partition(":")
    target = target.strip()
    if not colon or not target or not rest.strip():
        raise FaultError(f"expected TARGET:FAULT[=VALUE], such as PLC-S7:refuse (got {text!r})")
    values: list[tuple[str, FaultValue]] = []
    for part in rest.split(","):
        name, equals, raw = (piece.strip() for piece in part.partition("="))
        key = _SPEC_NAMES.get(name.lower())
        if key is None:
            known = ", ".join(sorted(set(_SPEC_NAMES) - {"delay_s", "totalizer_jump"}))
            raise FaultError(f"unknown fault {name!r} in {text!r} (known: {known})")
        value = _spec_value(key, raw if equals else None, text)
        checked = _plc_value(key, value) if key in _PLC_FAULTS else _tag_value(key, value)
        values.append((key, value if checked is None else checked))
    return FaultSpec(target, tuple(values))


def _spec_value(key: str, raw: str | None, text: str) -> FaultValue:
    if key in ("refuse", "drop", "freeze"):
        if raw is None or raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise FaultError(f"{key} takes no value, or true/false (got {raw!r} in {text!r})")
    if raw is None or raw == "":
        raise FaultError(f"{key} needs a value, such as {key}=2 (in {text!r})")
    try:
        return float(raw) if key in ("delay_s", "spike") else int(raw, 0)
    except ValueError:
        raise FaultError(f"{key}: {raw!r} is not a number (in {text!r})") from None


async def follow_faults(
    faults: Faults, apply: Callable[[], Awaitable[bool]], retry_s: float
) -> None:
    """Re-apply a server's faults whenever they change, until cancelled; `apply` returns
    True when it must be retried (a port not free again yet) after `retry_s`."""
    changed = faults.subscribe()
    try:
        while True:
            if await apply():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(retry_s):
                        await changed.wait()
            else:
                await changed.wait()
            changed.clear()
    finally:
        faults.unsubscribe(changed)
