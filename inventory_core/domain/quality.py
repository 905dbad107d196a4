"""Quality of a live (PLC-backed) value: what every side that shows values shares.

The PLC connectors report their own link-level quality (`plc_connectors.Quality`,
same names); `invops` maps it to this one once per sample. The OPC UA adapter
maps this one 1:1 to StatusCodes (REFERENCE 3.4, SPEC section 4); metrics,
alarms, history and the HTTP API read it as it is.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Quality"]


class Quality(StrEnum):
    """Quality of a live value (the values are stable names, used in logs and APIs)."""

    GOOD = "good"
    UNCERTAIN_LAST_USABLE = "uncertain_last_usable"  # link retrying, last good value held
    BAD_COMMUNICATION = "bad_communication"  # read failed
    BAD_NO_COMMUNICATION = "bad_no_communication"  # link down, no usable value
    BAD_WAITING = "bad_waiting_for_initial_data"  # never read yet

    @property
    def usable(self) -> bool:
        """Whether the value may be shown as a number (GOOD or held last-usable)."""
        return self is Quality.GOOD or self is Quality.UNCERTAIN_LAST_USABLE
