"""Ledger method handlers: OPC UA arguments -> ledger request -> movement id or a StatusCode.

Thin on purpose (STYLE §8): parse the arguments in the SPEC order, call the
Ledger, map every refusal to an explicit StatusCode. asyncua turns an
exception escaping a handler into Bad_UnexpectedError, so none escapes:

- role too low (Role.grants vs the MethodDef's required_role): Bad_UserAccessDenied,
  and the attempt is written to the audit trail (`DeniedCallAudit`: per caller and
  minute the first in full, the rest as one summary);
- wrong argument count: Bad_ArgumentsMissing / Bad_TooManyArguments;
- an argument of the wrong type: Bad_InvalidArgument, Bad_TypeMismatch for it;
- anything the ledger rejects (ValidationError and every InventoryError):
  Bad_InvalidArgument; the ledger validates before it writes, so nothing is posted;
- the ledger unreachable: Bad_ResourceUnavailable; a bug: Bad_InternalError (logged).

ApproveRequest / RejectRequest (electronic signatures, issue 16) need operator for the
session; the signer named by UserName / Password is re-authenticated through the
`SigningService` (Source.OPCUA) even inside an authenticated session, and the ledger
checks the signer's own role against the request's policy. A signature refused (wrong
password, locked out, the signer's role, meaning, same person twice, the two-person
rule): Bad_UserAccessDenied (the service and the ledger audit those attempts); an
unknown request: Bad_InvalidArgument; a request already posted or rejected:
Bad_InvalidState; no signing service: Bad_NotSupported. Nothing is posted then. The
password is never logged, audited nor quoted in an answer. A call that held a
request or signed one re-reads `Ledger/PendingRequests` before it answers.

SetLotQuality and ClosePeriod (issue 16) need engineer. SetLotQuality answers the
LotID, or the `request:` id where a `master-data` signature policy holds the change:
`Properties` (String[] of `NAME=VALUE[ UNIT]`) replace the lot's properties, an empty
(or null) array keeps them; `RetestDate` / `ExpiryDate` (YYYY-MM-DD) and
`Certificate` are set when given, '' keeps them (there is no "clear" over OPC UA); at
least one of the four must be given, and the Reason is required. A quality change is
no movement: the call refreshes `Lots/<LotID>` itself before it answers (other
interfaces' changes show with the next full re-read). ClosePeriod(From, To, ...) takes
ISO 8601 times (UTC if no zone), asks the ledger to close [From, To) and answers the
`request:` id of the held close; ApproveRequest (meaning `reviewed`, an engineer by
default) closes the period.

A rejection also says why: `InputArgumentResults` marks the argument at fault
(the others are Good), and that argument's entry of `InputArgumentDiagnosticInfos`
carries the message in `AdditionalInfo` (the first entry when no single argument
is at fault); the other entries are empty. asyncua's client raises on the StatusCode;
`client.uaclient.call(...)` returns the whole CallMethodResult.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Final, cast

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from information_model import TYPE_MODEL, MethodDef, Role
from inventory_core.clock import format_timestamp, parse_timestamp
from inventory_core.domain.errors import (
    AlreadyReversed,
    CapacityExceeded,
    IdempotencyConflict,
    InsufficientStock,
    InventoryError,
    LedgerUnavailable,
    LotExpired,
    LotNotReleased,
    LotStatusTransitionError,
    MaterialMismatch,
    PeriodClosed,
    RequestClosed,
    RequestRefused,
    SignatureRefused,
    UnitConversionError,
    UnitHoldsOtherLot,
    UnknownLot,
    UnknownMaterial,
    UnknownMovement,
    UnknownRequest,
    UnknownStorageUnit,
    ValidationError,
)
from inventory_core.domain.lot_quality import LotQualityRequest, check_properties, parse_property
from inventory_core.domain.model import (
    AuditEvent,
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialId,
    MovementId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    Source,
    StorageUnitId,
)
from inventory_core.domain.signatures import REQUEST_PREFIX
from inventory_core.domain.text import (
    InvalidText,
    check_free_text,
    check_identifier,
    check_key,
    shown,
)
from inventory_core.domain.units import parse_quantity
from inventory_core.ledger import MASTER_ID_MAX, UOM_MAX, Ledger
from inventory_core.log import get_logger
from inventory_core.signing import SigningService
from opcua_server.denied_calls import DeniedCallAudit
from opcua_server.values import status

log = get_logger(__name__)

CurrentUser = Callable[[], tuple[str, str]]
"""Returns (user name, invops role) of the session calling a method right now."""
RequestsChanged = Callable[[], Awaitable[None]]
"""Re-reads `Ledger/PendingRequests` (the ledger mirror's `refresh_requests`)."""
LotsChanged = Callable[[Collection[str]], Awaitable[None]]
"""Re-reads the given lots into `Lots/<LotID>` (the ledger mirror's `refresh`)."""

MethodResult = list[ua.Variant] | ua.CallMethodResult
MethodHandler = Callable[..., Awaitable[MethodResult]]

_NUMERIC_VARIANTS: Final = frozenset(
    {
        ua.VariantType.Double,
        ua.VariantType.Float,
        ua.VariantType.SByte,
        ua.VariantType.Byte,
        ua.VariantType.Int16,
        ua.VariantType.UInt16,
        ua.VariantType.Int32,
        ua.VariantType.UInt32,
        ua.VariantType.Int64,
        ua.VariantType.UInt64,
    }
)
# Empty means "none" for these; every other String argument is required.
_OPTIONAL: Final = frozenset(
    {"IdempotencyKey", "Reason", "Comment", "RetestDate", "ExpiryDate", "Certificate"}
)
# ... except in these methods: a rejection, a quality change and a period close need a reason.
_REQUIRED: Final[Mapping[str, frozenset[str]]] = {
    "RejectRequest": frozenset({"Reason"}),
    "SetLotQuality": frozenset({"Reason"}),
    "ClosePeriod": frozenset({"Reason"}),
}
# Never logged, audited nor quoted in an answer.
_SECRET: Final = frozenset({"Password"})
PASSWORD_MAX: Final = 1024  # characters; a longer one is refused before it is hashed
_SIGNING: Final = frozenset({"ApproveRequest", "RejectRequest"})
# Change a lot but post no movement (no listener hears of it): the call refreshes the lot.
_LOT_CHANGES: Final = frozenset({"SetLotQuality"})
# A draw may leave its lot empty: the source unit's lot handling picks the lot(s).
_DRAWS: Final = frozenset({"PostIssue", "PostTransfer", "PostScrap"})
MESSAGE_MAX: Final = 300  # characters of a refusal's reason in the log and the answer
# The ledger's text rules (inventory_core.domain.text) per String argument, applied here
# too so that a refusal names the argument; every other String argument is free text.
_TEXT_RULES: Final[Mapping[str, Callable[[str, str], None]]] = {
    "MaterialDefinitionID": lambda n, v: check_identifier(n, v, max_length=MASTER_ID_MAX),
    "LotID": check_identifier,
    "MovementID": check_identifier,
    "FromUnit": lambda n, v: check_identifier(n, v, max_length=MASTER_ID_MAX),
    "ToUnit": lambda n, v: check_identifier(n, v, max_length=MASTER_ID_MAX),
    "Unit": lambda n, v: check_identifier(n, v, max_length=MASTER_ID_MAX),
    "UnitOfMeasure": lambda n, v: check_identifier(n, v, max_length=UOM_MAX),
    "Status": lambda n, v: check_identifier(n, v, max_length=16),
    "ReasonCode": lambda n, v: check_key(n, v, max_length=MASTER_ID_MAX),
    "IdempotencyKey": check_key,
    "RequestId": lambda n, v: check_identifier(n, v.removeprefix(REQUEST_PREFIX)),
    "UserName": check_identifier,
    "Password": lambda n, v: _check_password(n, v),
}
# Which argument a ledger InvalidText is about, by the ledger's field name.
_TEXT_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "material": ("MaterialDefinitionID",),
    "lot": ("LotID",),
    "from unit": ("FromUnit", "Unit"),
    "to unit": ("ToUnit", "Unit"),
    "unit of measure": ("UnitOfMeasure",),
    "idempotency key": ("IdempotencyKey",),
    "reason": ("Reason", "Comment", "ReasonCode"),
    "movement id": ("MovementID",),
    "request": ("RequestId",),
    "user": ("UserName",),
    "meaning": ("Meaning",),
    "property": ("Properties",),
    "property value": ("Properties",),
    "property unit": ("Properties",),
    "certificate": ("Certificate",),
}
_QUANTITY_ARGUMENTS: Final = ("Quantity", "DeltaQuantity", "CountedQuantity")
_UNIT_ARGUMENTS: Final = ("FromUnit", "ToUnit", "Unit")
# Which argument an error of this class is about (first one the method has).
_ERROR_ARGUMENTS: Final[tuple[tuple[type[Exception], tuple[str, ...]], ...]] = (
    (UnknownMaterial, ("MaterialDefinitionID",)),
    (UnknownLot, ("LotID",)),
    (LotNotReleased, ("LotID",)),
    (LotExpired, ("LotID",)),
    (LotStatusTransitionError, ("Status",)),
    (UnknownMovement, ("MovementID",)),
    (AlreadyReversed, ("MovementID",)),
    (UnitConversionError, ("UnitOfMeasure",)),
    (InsufficientStock, (*_QUANTITY_ARGUMENTS, "MovementID")),
    (CapacityExceeded, _QUANTITY_ARGUMENTS),
    (IdempotencyConflict, ("IdempotencyKey",)),
    (MaterialMismatch, ("LotID", "MaterialDefinitionID")),
    (UnitHoldsOtherLot, ("LotID",)),
    (UnknownRequest, ("RequestId",)),
    (RequestClosed, ("RequestId",)),
    (PeriodClosed, ("From",)),
)
# Otherwise: the first of these words in the message names the argument.
_MESSAGE_WORDS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("is signed as", ("Meaning",)),
    ("overlaps", ("From",)),
    ("has passed", ("To",)),
    ("start before", ("To",)),
    ("propert", ("Properties",)),
    ("certificate", ("Certificate",)),
    ("lot status", ("Status",)),
    ("idempotency key", ("IdempotencyKey",)),
    ("unit of measure", ("UnitOfMeasure",)),
    ("source unit", ("FromUnit",)),
    ("target unit", ("ToUnit",)),
    ("quantity", _QUANTITY_ARGUMENTS),
    ("reason", ("Reason", "ReasonCode")),
    ("material", ("MaterialDefinitionID",)),
    ("movement", ("MovementID",)),
    ("lot", ("LotID",)),
)


def default_current_user() -> tuple[str, str]:
    """Until the security module plugs in its own hook: every caller may do everything."""
    return ("anonymous", Role.ADMIN.value)


class _Rejected(Exception):
    """A call refused before or by the ledger: StatusCode, message, argument at fault.
    The message is what the log and the DiagnosticInfo carry: controls escaped and cut
    to MESSAGE_MAX characters, whatever the caller sent."""

    def __init__(self, code: int, message: str, argument: int | None = None) -> None:
        super().__init__(shown(message, MESSAGE_MAX))
        self.code = code
        self.argument = argument
        self.argument_code = code


Arguments = dict[str, object]


class LedgerMethods:
    """The Ledger methods of SPEC §4, bound to one Ledger and the Ledger object.

    `signing` signs pending requests (None: ApproveRequest and RejectRequest answer
    Bad_NotSupported); `requests_changed` is awaited after a call held or signed one,
    `lots_changed` after a call changed a lot without a movement (SetLotQuality)."""

    def __init__(
        self,
        ledger: Ledger,
        ledger_id: ua.NodeId,
        current_user: CurrentUser = default_current_user,
        denied_calls: DeniedCallAudit | None = None,
        *,
        signing: SigningService | None = None,
        requests_changed: RequestsChanged | None = None,
        lots_changed: LotsChanged | None = None,
    ) -> None:
        self._ledger = ledger
        self._signing = signing
        self._requests_changed = requests_changed
        self._lots_changed = lots_changed
        self._ledger_id = ledger_id
        self._current_user = current_user
        self._denied = denied_calls or DeniedCallAudit(ledger.record_event)
        self.definitions: Mapping[str, MethodDef] = {
            m.browse_name: m for m in TYPE_MODEL.all_methods("LedgerType")
        }
        self._requests: Mapping[str, Callable[[Arguments, str], Awaitable[str]]] = {
            "PostReceipt": self._post_receipt,
            "PostIssue": self._post_issue,
            "PostTransfer": self._post_transfer,
            "PostAdjustment": self._post_adjustment,
            "RecordCount": self._record_count,
            "SetLotStatus": self._set_lot_status,
            "ReverseMovement": self._reverse_movement,
            "PostScrap": self._post_scrap,
            "PostProduction": self._post_production,
            "ApproveRequest": self._approve_request,
            "RejectRequest": self._reject_request,
            "SetLotQuality": self._set_lot_quality,
            "ClosePeriod": self._close_period,
        }
        missing = set(self.definitions) ^ set(self._requests)
        if missing:
            raise RuntimeError(f"LedgerType methods without a handler: {sorted(missing)}")

    def handler(self, name: str) -> MethodHandler:
        """The asyncua callback for method `name` (an `async def`: it must run in the
        request's own task so that `current_user()` sees the caller)."""
        method = self.definitions[name]

        async def handle(parent: ua.NodeId, *arguments: ua.Variant) -> MethodResult:
            return await self.call(method, parent, arguments)

        handle.__name__ = name
        return handle

    async def call(
        self, method: MethodDef, parent: ua.NodeId, arguments: Sequence[ua.Variant]
    ) -> MethodResult:
        """Run one call; never raises (CancelledError aside)."""
        user, role = "?", "?"
        repeated = False  # a denial already audited in full this window: logged at DEBUG
        try:
            user, role = self._current_user()
            if parent != self._ledger_id:
                raise _Rejected(
                    StatusCodes.BadMethodInvalid,
                    f"{method.browse_name} is a method of {self._ledger_id.to_string()}",
                )
            if not _granted(role, method.required_role):
                repeated = not await self._audit_denied(method, user, role, arguments)
                raise _Rejected(
                    StatusCodes.BadUserAccessDenied,
                    f"role {role} may not call {method.browse_name} "
                    f"(requires {method.required_role})",
                )
            values = _parse(method, arguments)
            try:
                movement_id = await self._requests[method.browse_name](values, user)
            except LedgerUnavailable as exc:
                raise _Rejected(StatusCodes.BadResourceUnavailable, str(exc)) from exc
            except SignatureRefused as exc:  # audited by the signing service / the ledger
                raise _Rejected(
                    StatusCodes.BadUserAccessDenied, str(exc), _argument_of(exc, method, values)
                ) from exc
            except RequestClosed as exc:
                raise _Rejected(
                    StatusCodes.BadInvalidState, str(exc), _argument_of(exc, method, values)
                ) from exc
            except InventoryError as exc:
                raise _Rejected(
                    StatusCodes.BadInvalidArgument, str(exc), _argument_of(exc, method, values)
                ) from exc
        except _Rejected as rejected:
            # Once per call; a missing role is a security event (WARNING).
            denied = rejected.code == StatusCodes.BadUserAccessDenied
            log.log(
                logging.DEBUG if repeated else logging.WARNING if denied else logging.INFO,
                "opcua_method_rejected",
                method=method.browse_name,
                user=user,
                role=role,
                status=status(rejected.code).name,
                reason=str(rejected),
            )
            return _rejection(rejected, len(arguments))
        except Exception:  # a bug: answer it, log it, never let asyncua see it
            log.exception("opcua_method_failed", method=method.browse_name, user=user)
            failure = _Rejected(StatusCodes.BadInternalError, "internal error (logged)")
            return _rejection(failure, len(arguments))
        log.info("opcua_method_posted", method=method.browse_name, user=user, movement=movement_id)
        held = movement_id.startswith(REQUEST_PREFIX)
        if method.browse_name in _SIGNING or held:
            await self._refresh_requests()
        if method.browse_name in _LOT_CHANGES and not held:
            await self._refresh_lots(movement_id)
        return [ua.Variant(movement_id, ua.VariantType.String)]

    async def _refresh_lots(self, lot: str) -> None:
        """Lots/<LotID> after a call changed the lot without a movement; the call has
        succeeded whatever happens here (the mirror's full re-read catches up)."""
        if self._lots_changed is None:
            return
        try:
            await self._lots_changed((lot,))
        except Exception as exc:
            log.warning("opcua_lot_not_refreshed", lot=lot, error=shown(str(exc)))

    async def _refresh_requests(self) -> None:
        """Ledger/PendingRequests after a call held or signed a request; the call has
        succeeded whatever happens here (the refresh loop's full re-read catches up)."""
        if self._requests_changed is None:
            return
        try:
            await self._requests_changed()
        except Exception as exc:
            log.warning("opcua_pending_requests_not_refreshed", error=shown(str(exc)))

    async def close(self) -> None:
        """Write the denied-call summaries still open (server stop)."""
        await self._denied.close()

    async def _audit_denied(
        self, method: MethodDef, user: str, role: str, arguments: Sequence[ua.Variant]
    ) -> bool:
        """Count and audit a denied call; True when written in full (see DeniedCallAudit)."""
        event = AuditEvent(
            user=user,
            action="denied",
            object_type="opcua_method",
            object_id=method.browse_name,
            reason=f"role {role} lacks {method.required_role}",
            details={
                "method": method.browse_name,
                "role": role,
                "required_role": method.required_role,
                "arguments": _shown_arguments(method, arguments),
            },
        )
        return await self._denied.denied(event, role=role)

    # --- requests, one per method (arguments already parsed) ----------------------

    def _posting(
        self,
        kind: MovementKind,
        values: Arguments,
        user: str,
        *,
        quantity: str = "Quantity",
        material: str | None = None,
        reason: str | None = None,
        details: dict[str, object] | None = None,
    ) -> PostingRequest:
        from_unit = values.get("FromUnit")
        to_unit = values.get("ToUnit", values.get("Unit"))
        key = _text(values, "IdempotencyKey")
        quantity_value = values[quantity]
        assert isinstance(quantity_value, Decimal)
        lot = _text(values, "LotID")
        return PostingRequest(
            kind=kind,
            material=MaterialId(material or _text(values, "MaterialDefinitionID")),
            lot=LotId(lot) if lot else None,
            quantity=quantity_value,
            uom=_text(values, "UnitOfMeasure"),
            from_unit=None if from_unit is None else StorageUnitId(str(from_unit)),
            to_unit=None if to_unit is None else StorageUnitId(str(to_unit)),
            idempotency_key=key or None,
            reason=_text(values, "Reason") if reason is None else reason,
            user=user,
            source=Source.OPCUA,
            details=details or {},
        )

    async def _post(self, request: PostingRequest) -> str:
        return str((await self._ledger.post(request)).movement_id)

    async def _post_receipt(self, values: Arguments, user: str) -> str:
        return await self._post(self._posting(MovementKind.RECEIPT, values, user))

    async def _post_issue(self, values: Arguments, user: str) -> str:
        return await self._post(self._posting(MovementKind.ISSUE, values, user))

    async def _post_transfer(self, values: Arguments, user: str) -> str:
        return await self._post(self._posting(MovementKind.TRANSFER, values, user))

    async def _coded(
        self, kind: MovementKind, values: Arguments, user: str, quantity: str = "Quantity"
    ) -> PostingRequest:
        """An adjustment or scrap: material from the lot or unit, reason from ReasonCode
        and Comment (both also kept in the details)."""
        code, comment = _text(values, "ReasonCode"), _text(values, "Comment")
        return self._posting(
            kind,
            values,
            user,
            quantity=quantity,
            material=await self._material_of(values),
            reason=f"{code}: {comment}" if comment else code,
            details={"reason_code": code, "comment": comment},
        )

    async def _post_adjustment(self, values: Arguments, user: str) -> str:
        request = await self._coded(MovementKind.ADJUSTMENT, values, user, "DeltaQuantity")
        return await self._post(request)

    async def _post_scrap(self, values: Arguments, user: str) -> str:
        request = await self._coded(MovementKind.SCRAP, values, user)
        unit = StorageUnitId(_text(values, "Unit"))
        return await self._post(replace(request, from_unit=unit, to_unit=None))

    async def _post_production(self, values: Arguments, user: str) -> str:
        lots, quantities, units = (
            values["ConsumedLots"], values["ConsumedQuantities"], values["ConsumedUnits"]
        )  # fmt: skip
        assert isinstance(lots, list) and isinstance(quantities, list) and isinstance(units, list)
        if not len(lots) == len(quantities) == len(units):
            raise ValidationError(
                f"ConsumedLots ({len(lots)}), ConsumedQuantities ({len(quantities)}) and "
                f"ConsumedUnits ({len(units)}) must be arrays of equal length"
            )
        request = replace(
            self._posting(MovementKind.PRODUCTION, values, user),
            consumed_lots=tuple(LotId(lot) for lot in lots),
            consumed_quantities=tuple(quantities),
            consumed_units=tuple(StorageUnitId(u) if u else None for u in units)
            if any(units)
            else (),
        )
        return await self._post(request)

    async def _record_count(self, values: Arguments, user: str) -> str:
        request = self._posting(
            MovementKind.COUNT,
            values,
            user,
            quantity="CountedQuantity",
            material=await self._material_of(values),
            reason="physical count",
        )
        return await self._post(request)

    async def _material_of(self, values: Arguments) -> str:
        """Adjustments and counts name no material: the lot's, else the unit's (a count
        may create its lot)."""
        lot, unit = _text(values, "LotID"), _text(values, "Unit")
        for found in await self._ledger.lots(lot) if lot else []:  # "": the unit picks
            return str(found.material)
        for storage_unit in await self._ledger.storage_units():
            if storage_unit.id == unit:
                if storage_unit.material is not None:
                    return str(storage_unit.material)
                held = {b.material for b in await self._ledger.balances(unit=unit) if b.quantity}
                if not lot and len(held) == 1:  # a draw the unit's lot handling allocates
                    return str(held.pop())
                if not lot:
                    raise UnknownLot(f"unit {unit} holds no one material: name the lot (LotID)")
                raise UnknownLot(f"lot {lot} does not exist and unit {unit} holds no material")
        raise UnknownStorageUnit(f"storage unit {unit} does not exist")

    async def _set_lot_status(self, values: Arguments, user: str) -> str:
        status_text = _text(values, "Status")
        try:
            status = LotStatus(status_text.strip().lower())
        except ValueError:
            known = ", ".join(s.value for s in LotStatus)
            raise ValidationError(f"lot status {status_text!r} is not one of {known}") from None
        request = LotStatusRequest(
            lot=LotId(_text(values, "LotID")),
            status=status,
            reason=_text(values, "Reason"),
            user=user,
            source=Source.OPCUA,
        )
        return str((await self._ledger.set_lot_status(request)).movement_id)

    # --- electronic signatures -----------------------------------------------------------

    def _signing_service(self, method: str) -> SigningService:
        if self._signing is None:
            raise _Rejected(
                StatusCodes.BadNotSupported,
                f"{method}: this server signs no requests (no signing service configured)",
            )
        return self._signing

    async def _approve_request(self, values: Arguments, user: str) -> str:
        signing = self._signing_service("ApproveRequest")
        request_id, signer = _text(values, "RequestId"), _text(values, "UserName")
        outcome = await signing.approve(
            request_id,
            signer,
            _text(values, "Password"),
            _text(values, "Meaning"),
            source=Source.OPCUA,
        )
        answer = str(outcome.posted.movement_id if outcome.posted else outcome.request.request_id)
        log.info(
            "opcua_request_signed",
            request=outcome.request.request_id,
            decision="approved",
            signer=signer,
            session_user=user,
            state=str(outcome.request.state),
            posted=answer if outcome.posted else "",
        )
        return answer

    async def _reject_request(self, values: Arguments, user: str) -> str:
        signing = self._signing_service("RejectRequest")
        signer = _text(values, "UserName")
        outcome = await signing.reject(
            _text(values, "RequestId"),
            signer,
            _text(values, "Password"),
            _text(values, "Reason"),
            source=Source.OPCUA,
        )
        log.info(
            "opcua_request_signed",
            request=outcome.request.request_id,
            decision="rejected",
            signer=signer,
            session_user=user,
            state=str(outcome.request.state),
            posted="",
        )
        return outcome.request.request_id

    # --- lot quality and period close ---------------------------------------------------

    def _at_fault(self, method: str, argument: str, message: str) -> _Rejected:
        names = [a.name for a in self.definitions[method].inputs]
        return _Rejected(StatusCodes.BadInvalidArgument, message, names.index(argument))

    def _date(self, method: str, values: Arguments, name: str) -> date | None:
        """A YYYY-MM-DD argument ('' : None); the argument is at fault otherwise."""
        text = _text(values, name)
        try:
            return date.fromisoformat(text) if text else None
        except ValueError:
            raise self._at_fault(
                method, name, f"{name} {shown(text, 40)!r} is not a date (YYYY-MM-DD)"
            ) from None

    def _timestamp(self, method: str, values: Arguments, name: str) -> str:
        """An ISO 8601 argument (UTC if no zone) as the ledger writes its timestamps."""
        text = _text(values, name)
        try:
            return format_timestamp(parse_timestamp(text))
        except (ValueError, OverflowError):
            raise self._at_fault(
                method,
                name,
                f"{name} {shown(text, 40)!r} is not an ISO 8601 time (e.g. 2026-11-26T06:00:00Z)",
            ) from None

    async def _set_lot_quality(self, values: Arguments, user: str) -> str:
        entries = values["Properties"]
        assert isinstance(entries, list)
        properties = None
        if entries:  # an empty array keeps the lot's properties
            try:
                properties = tuple(parse_property(str(entry)) for entry in entries)
                check_properties(properties)
            except ValidationError as exc:
                raise self._at_fault("SetLotQuality", "Properties", str(exc)) from exc
        retest, expiry = (
            self._date("SetLotQuality", values, name) for name in ("RetestDate", "ExpiryDate")
        )
        certificate = _text(values, "Certificate")
        if properties is None and not (retest or expiry or certificate):
            raise _Rejected(
                StatusCodes.BadInvalidArgument,
                "nothing to set: give Properties, a RetestDate or ExpiryDate, or a Certificate",
            )
        request = LotQualityRequest(
            lot=LotId(_text(values, "LotID")),
            reason=_text(values, "Reason"),
            user=user,
            source=Source.OPCUA,
            properties=properties,
            retest=retest,
            expiry=expiry,
            certificate=certificate or None,
        )
        result = await self._ledger.set_lot_quality(request)
        held = result.movement_id.startswith(REQUEST_PREFIX)
        return result.movement_id if held or result.lot is None else result.lot.id

    async def _close_period(self, values: Arguments, user: str) -> str:
        # Ledger timestamps (fixed-width UTC text): the ledger compares them as text.
        start, end = (self._timestamp("ClosePeriod", values, name) for name in ("From", "To"))
        key = _text(values, "IdempotencyKey")
        result = await self._ledger.request_period_close(
            start,
            end,
            user=user,
            reason=_text(values, "Reason"),
            idempotency_key=key or None,
            source=Source.OPCUA,
        )
        return str(result.movement_id)

    async def _reverse_movement(self, values: Arguments, user: str) -> str:
        request = ReversalRequest(
            movement_id=MovementId(_text(values, "MovementID")),
            reason=_text(values, "Reason"),
            user=user,
            source=Source.OPCUA,
        )
        return str((await self._ledger.reverse(request)).movement_id)


def _granted(role: str, required: str) -> bool:
    try:
        return Role(role).grants(required)
    except ValueError:  # an unknown role string grants nothing
        return False


def _check_password(name: str, value: str) -> None:
    """Any characters (the password check normalises them), bounded; never quoted."""
    if len(value) > PASSWORD_MAX:
        raise InvalidText(name, f"{name} is longer than {PASSWORD_MAX} characters")


def _shown_arguments(method: MethodDef, arguments: Sequence[ua.Variant]) -> list[str]:
    """The arguments of a denied call as the audit keeps them: secrets (and, in a
    method that has one, any argument beyond its inputs) as "***"."""
    names = [a.name for a in method.inputs]
    has_secret = bool(_SECRET & set(names))
    return [
        "***" if (names[i] in _SECRET if i < len(names) else has_secret) else str(a.Value)[:200]
        for i, a in enumerate(arguments)
    ]


def _text(values: Arguments, name: str) -> str:
    value = values.get(name, "")
    return value if isinstance(value, str) else str(value)


def _parse(method: MethodDef, arguments: Sequence[ua.Variant]) -> Arguments:
    """Arguments by name: Strings as str ('' for null), Doubles as exact Decimals."""
    expected = len(method.inputs)
    if len(arguments) < expected:
        raise _Rejected(
            StatusCodes.BadArgumentsMissing,
            f"{method.browse_name} takes {expected} arguments, got {len(arguments)}",
        )
    if len(arguments) > expected:
        raise _Rejected(
            StatusCodes.BadTooManyArguments,
            f"{method.browse_name} takes {expected} arguments, got {len(arguments)}",
        )
    values: Arguments = {}
    for index, (definition, variant) in enumerate(zip(method.inputs, arguments, strict=True)):
        name, value = definition.name, variant.Value
        if definition.array:
            values[name] = _parse_array(index, definition.name, definition.data_type, variant)
            continue
        # Every other ledger argument is a scalar: an array, a matrix or a structure is
        # refused for that argument, whatever its element type.
        if variant.is_array or variant.Dimensions or isinstance(value, list | tuple):
            raise _type_mismatch(index, f"{name} must be a scalar {definition.data_type}, "
                                 f"not an array of {variant.VariantType.name}")  # fmt: skip
        if definition.data_type == "Double":
            if (
                variant.VariantType not in _NUMERIC_VARIANTS
                or not isinstance(value, int | float)
                or isinstance(value, bool)
            ):
                raise _type_mismatch(
                    index, f"{name} must be a Double, not {variant.VariantType.name}"
                )
            try:
                # Double -> Decimal through its shortest repr: 0.1 stays 0.1.
                values[name] = parse_quantity(float(value))
            except (ValidationError, OverflowError) as exc:
                raise _Rejected(StatusCodes.BadInvalidArgument, f"{name}: {exc}", index) from exc
        else:
            if variant.VariantType not in (ua.VariantType.String, ua.VariantType.Null) or not (
                value is None or isinstance(value, str)
            ):
                raise _type_mismatch(
                    index, f"{name} must be a String, not {variant.VariantType.name}"
                )
            text = value if isinstance(value, str) else ""  # a null String: empty
            optional = (
                name in _OPTIONAL and name not in _REQUIRED.get(method.browse_name, ())
            ) or (name == "LotID" and method.browse_name in _DRAWS)
            blank = not text if name in _SECRET else not text.strip()  # a password is as given
            if blank and not optional:
                raise _Rejected(StatusCodes.BadInvalidArgument, f"{name} is missing", index)
            if text:
                try:
                    _TEXT_RULES.get(name, check_free_text)(name, text)
                except InvalidText as exc:
                    raise _Rejected(StatusCodes.BadInvalidArgument, str(exc), index) from exc
            values[name] = text
    return values


_ARRAY_MAX: Final = 256  # elements of one array argument (consumed lots of a production)
_ARRAY_TEXT_RULES: Final[Mapping[str, Callable[[str, str], None]]] = {
    "ConsumedLots": check_identifier,
    "ConsumedUnits": lambda n, v: check_identifier(n, v, max_length=MASTER_ID_MAX),
}


def _parse_array(index: int, name: str, data_type: str, variant: ua.Variant) -> list[object]:
    """A one-dimensional array argument: Strings checked by the text rules (empty only
    where '' means none), Doubles as exact Decimals; a null array is empty."""
    value = variant.Value
    if value is None and variant.VariantType in (ua.VariantType.Null, ua.VariantType.String,
                                                 ua.VariantType.Double):  # fmt: skip
        return []
    if not isinstance(value, list) or (variant.Dimensions and len(variant.Dimensions) > 1):
        raise _type_mismatch(index, f"{name} must be an array of {data_type}")
    if len(value) > _ARRAY_MAX:
        raise _Rejected(
            StatusCodes.BadInvalidArgument, f"{name} has more than {_ARRAY_MAX} elements", index
        )
    parsed: list[object] = []
    for position, item in enumerate(value):
        where = f"{name}[{position}]"
        if data_type == "Double":
            if (
                variant.VariantType not in _NUMERIC_VARIANTS
                or not isinstance(item, int | float)
                or isinstance(item, bool)
            ):
                raise _type_mismatch(index, f"{name} must be an array of Double")
            try:
                parsed.append(parse_quantity(float(item)))
            except (ValidationError, OverflowError) as exc:
                raise _Rejected(StatusCodes.BadInvalidArgument, f"{where}: {exc}", index) from exc
            continue
        if variant.VariantType is not ua.VariantType.String or not (
            item is None or isinstance(item, str)
        ):
            raise _type_mismatch(index, f"{name} must be an array of String")
        text = item or ""
        if text:
            try:
                _ARRAY_TEXT_RULES.get(name, check_free_text)(where, text)
            except InvalidText as exc:
                raise _Rejected(StatusCodes.BadInvalidArgument, str(exc), index) from exc
        elif name != "ConsumedUnits":
            raise _Rejected(StatusCodes.BadInvalidArgument, f"{where} is missing", index)
        parsed.append(text)
    return parsed


def _type_mismatch(index: int, message: str) -> _Rejected:
    rejected = _Rejected(StatusCodes.BadInvalidArgument, message, index)
    rejected.argument_code = StatusCodes.BadTypeMismatch
    return rejected


def _argument_of(exc: Exception, method: MethodDef, values: Arguments) -> int | None:
    """Index of the argument an error is about, when it can be told."""
    names = [a.name for a in method.inputs]

    def first(candidates: Sequence[str]) -> int | None:
        for name in candidates:
            if name in names:
                return names.index(name)
        return None

    if isinstance(exc, RequestRefused):  # the database's reason names no argument
        return None
    if isinstance(exc, InvalidText):
        return first(_TEXT_FIELDS.get(exc.field, ()))
    lowered = str(exc).lower()
    if "consum" in lowered:  # a production's consumption: its arrays, not its own lot
        if isinstance(exc, InsufficientStock) or "quantit" in lowered:
            return first(("ConsumedQuantities", "ConsumedLots"))
        return first(("ConsumedUnits",) if "unit" in lowered else ("ConsumedLots",))
    for error_type, candidates in _ERROR_ARGUMENTS:
        if isinstance(exc, error_type):
            found = first(candidates)
            if found is not None:
                return found
    message = str(exc)
    if isinstance(exc, UnknownStorageUnit):  # the message names the unit
        units = [n for n in _UNIT_ARGUMENTS if n in values and str(values[n]) in message]
        return first(units)
    for word, candidates in _MESSAGE_WORDS:
        if word in lowered:
            found = first(candidates)
            if found is not None:
                return found
    return None


def _rejection(rejected: _Rejected, argument_count: int) -> ua.CallMethodResult:
    """Only the argument at fault is marked and carries the reason (in its DiagnosticInfo's
    AdditionalInfo); when no single argument is at fault, the first entry carries it."""
    result = ua.CallMethodResult()
    result.StatusCode = status(rejected.code)
    result.InputArgumentResults = [
        status(rejected.argument_code if i == rejected.argument else StatusCodes.Good)
        for i in range(argument_count)
    ]
    carrier = 0 if rejected.argument is None else rejected.argument
    result.InputArgumentDiagnosticInfos = [
        ua.DiagnosticInfo(AdditionalInfo=cast(ua.String, str(rejected)))
        if i == carrier
        else ua.DiagnosticInfo()
        for i in range(argument_count)
    ]
    return result
