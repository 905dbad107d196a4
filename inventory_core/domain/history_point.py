"""Value history: one stored sample of a time series (a tank level, a quantity).

The ledger is the authoritative record of movements; value history is the
convenience trend behind OPC UA HistoryRead (REFERENCE.md section 3.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from inventory_core.domain.errors import ValidationError

__all__ = ["MAX_SERIES_NAME", "HistoryPoint", "HistoryValue"]

HistoryValue = float | str | None
MAX_SERIES_NAME = 200


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """A sample of series `node` (an opaque name such as "TK-101.Level").

    `status` is the OPC UA StatusCode value (0 = Good). Timestamps are
    timezone-aware and normalised to UTC.
    """

    node: str
    source_time: datetime
    value: HistoryValue
    status: int = 0
    server_time: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.node, str) or not self.node or len(self.node) > MAX_SERIES_NAME:
            raise ValidationError(f"series name must be 1..{MAX_SERIES_NAME} characters")
        object.__setattr__(self, "source_time", _utc(self.source_time, "source_time"))
        if self.server_time is not None:
            object.__setattr__(self, "server_time", _utc(self.server_time, "server_time"))
        if isinstance(self.value, bool) or not isinstance(self.value, float | int | str | None):
            raise ValidationError(
                f"history value must be a number, text or None, got {type(self.value).__name__}"
            )
        if isinstance(self.value, int):
            object.__setattr__(self, "value", float(self.value))
        if (
            isinstance(self.status, bool)
            or not isinstance(self.status, int)
            or not 0 <= self.status <= 0xFFFFFFFF
        ):
            raise ValidationError(f"status {self.status!r} is not a 32-bit StatusCode value")


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(f"{what} {moment.isoformat()} has no time zone (expected UTC)")
    return moment.astimezone(UTC)
