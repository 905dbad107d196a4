"""Domain errors: every rejection a caller can see, each with a one-line message."""

from __future__ import annotations


class InventoryError(Exception):
    """Root of every error the inventory core raises on purpose."""


class ValidationError(InventoryError):
    """A request is malformed: bad quantity, missing field, unknown kind."""


class DisagreesWithGauge(ValidationError):
    """A count or adjustment of a measured unit would leave its book further from the
    gauge than the unit's tolerance (its zero_lot_threshold)."""


class UnknownMaterial(ValidationError):
    """A posting names a material the ledger does not know."""


class UnknownStorageUnit(ValidationError):
    """A posting names a storage unit the ledger does not know."""


class UnknownLot(ValidationError):
    """A posting or status change names a lot that does not exist."""


class UnknownMovement(ValidationError):
    """A reversal names a movement id that does not exist."""


class UnknownAdvice(ValidationError):
    """A query names an advice id that does not exist."""


class UnitConversionError(ValidationError):
    """A quantity cannot be converted to the material's base unit."""


class MaterialMismatch(ValidationError):
    """A lot or storage unit belongs to a different material than the posting."""


class InsufficientStock(InventoryError):
    """A manual posting would make a book balance negative."""


class CapacityExceeded(InventoryError):
    """A manual posting would put a unit's book far above its capacity (beyond the margin)."""


class LotNotReleased(InventoryError):
    """A manual issue names a lot whose status is not `released`."""


class LotExpired(InventoryError):
    """A manual issue names a lot past its expiry date."""


class UnitHoldsOtherLot(InventoryError):
    """A manual posting would put a second lot into a `single` lot-handling unit."""


class LotStatusTransitionError(InventoryError):
    """A lot status change is not allowed from the lot's current status."""


class AlreadyReversed(InventoryError):
    """A reversal names a movement that was already reversed (or is a reversal)."""


class IdempotencyConflict(InventoryError):
    """An idempotency key was reused with a different payload."""


class LedgerUnavailable(InventoryError):
    """The ledger database cannot be reached or has no schema."""


class LeaseError(InventoryError):
    """A writer id or a measured unit is held by another live process."""


class WriterIdInUse(LeaseError):
    """At start: another live process holds the lease of this writer id."""


class UnitsOwned(LeaseError):
    """At start: measured units this instance would book are booked by another live writer."""


class WriterLeaseLost(LeaseError):
    """This process no longer holds its writer lease (another took it over): stop writing."""


class RequestRefused(InventoryError):
    """The ledger database refused to store one request's values (a data or constraint
    error): that request alone fails, nothing of it is posted, the ledger stays up."""


class UnknownRequest(ValidationError):
    """No pending request has this id."""


class RequestClosed(InventoryError):
    """The request was already posted or rejected: signing it again changes nothing."""


class SignatureRefused(InventoryError):
    """This signer may not sign this request (role, meaning, same person twice, the
    two-person rule), or the signer's re-authentication failed or is locked out."""


class PeriodClosed(InventoryError):
    """The books are closed for that time: the close overlaps one, or a posting would
    fall inside one. Corrections post in the open period."""
