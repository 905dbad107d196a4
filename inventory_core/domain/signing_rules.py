"""The planner's part of electronic signatures (see `domain.signatures`): which policy
catches a request, holding it as a pending request, and signing one.

A mixin of `posting.Planner`, so the rules run inside the posting transaction with the
planner's state: the request held is checked first (a request the rules would refuse
is refused, not held), and the request posted on its last signature is checked again,
against the ledger as it is then.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from inventory_core.domain.advices import ADVICE_PREFIX, Advice
from inventory_core.domain.audit import PendingAudit, canonical_json
from inventory_core.domain.errors import (
    PeriodClosed,
    RequestClosed,
    SignatureRefused,
    UnknownRequest,
    ValidationError,
)
from inventory_core.domain.lot_quality import LotQualityRequest
from inventory_core.domain.model import (
    LotStatus,
    LotStatusRequest,
    MasterDataUpdate,
    MovementId,
    PostingRequest,
    PostingResult,
    ReversalRequest,
    StorageUnitId,
)
from inventory_core.domain.signatures import (
    MATERIAL_PREFIX,
    PERIOD_CLOSE_POLICY,
    PERIOD_PREFIX,
    REQUEST_PREFIX,
    AdviceVarianceReview,
    ClosedPeriod,
    ClosePeriodRequest,
    Decision,
    PendingRequest,
    RequestState,
    Signature,
    SignatureAction,
    SignaturePoliciesUpdate,
    SignaturePolicy,
    SignedRequest,
    SignRequest,
    policies_json,
    request_digest,
    request_fingerprint,
    request_payload,
    signed_manifest,
)
from inventory_core.domain.users import Role

if TYPE_CHECKING:
    from inventory_core.domain.posting import Changes, LedgerState

__all__ = ["SignOutcome", "SigningRules"]

_ROLES = list(Role)
# Actions without a quantity: a policy catches each of their requests.
_EVERY_REQUEST = frozenset({SignatureAction.PERIOD_CLOSE, SignatureAction.MASTER_DATA})


@dataclass(frozen=True, slots=True)
class SignOutcome:
    """A signature recorded: the request as it is now, and what it posted (None: it
    waits for another signature, or was rejected)."""

    request: PendingRequest
    posted: PostingResult | None = None


class SigningRules:
    """Mixed into Planner, which provides these attributes and the three postings."""

    state: LedgerState
    changes: Changes
    _now: Callable[[], str]
    _policies: Sequence[SignaturePolicy]
    _signing: dict[str, object] | None  # while a signed request posts: its signatures

    def post(self, req: PostingRequest, digest: str) -> PostingResult:
        raise NotImplementedError

    def reverse(self, req: ReversalRequest, digest: str) -> PostingResult:
        raise NotImplementedError

    def _replay(self, key: str | None, digest: str) -> PostingResult | None:
        raise NotImplementedError

    # -- closing a period --------------------------------------------------------

    def close_period(self, req: ClosePeriodRequest, digest: str) -> PostingResult:
        """Hold the close of [start, end) for its signatures; signed, close it."""
        replay = self._replay(req.idempotency_key, digest)
        if replay is not None:
            return replay
        now = self._now()
        if not req.start < req.end <= now:
            raise ValidationError(
                f"a period closes from its start to an end that has passed: {req.start} to "
                f"{req.end} (now {now})"
            )
        for closed in self.state.closed_periods:
            if req.start < closed.end and closed.start < req.end:
                raise PeriodClosed(
                    f"the period {req.start} to {req.end} overlaps {closed.id}, closed at "
                    f"{closed.closed_at}"
                )
        if self._signing is None:
            policy = self._policy(SignatureAction.PERIOD_CLOSE, Decimal(0), None)
            summary = (
                f"close of the period {req.start} to {req.end} "
                f"(balance report sha256 {req.report_digest[:16]}...)"
            )
            return self._hold(req, policy or PERIOD_CLOSE_POLICY, digest, summary)
        request_id = str(self._signing["request"])
        closed = ClosedPeriod(
            f"{req.start}/{req.end}",
            req.start,
            req.end,
            req.report_digest,
            request_id,
            now,
            req.user,
        )
        self.state.closed_periods.append(closed)
        self.changes.closed_periods.append(closed)
        self.changes.audits.append(
            PendingAudit(
                timestamp=now,
                user=req.user,
                action="close",
                object_type="period",
                object_id=closed.id,
                reason=req.reason,
                old="",
                new=canonical_json(
                    {
                        "start": closed.start,
                        "end": closed.end,
                        "report_digest": closed.report_digest,
                        "request": request_id,
                        "signatures": self._signing["signatures"],
                    }
                ),
            )
        )
        return PostingResult(MovementId(f"{PERIOD_PREFIX}{closed.id}"))

    # -- advice variances -------------------------------------------------------

    def _review_variance(self, advice: Advice) -> None:
        """A matched advice whose variance an `advice-variance` policy does not tolerate
        (a quantity, or a % of the advised quantity): held for a signature that accepts
        it. The gauge's booking stands either way."""
        variance = advice.variance
        if variance is None or not variance:
            return
        policy = self._policy(
            SignatureAction.ADVICE_VARIANCE, variance, None, expected=advice.expected
        )
        if policy is None:
            return
        review = AdviceVarianceReview(
            advice.id, advice.unit, advice.expected, advice.matched, advice.uom,
            idempotency_key=f"advice-variance:{advice.id}",
        )  # fmt: skip
        pct = f" ({advice.variance_pct} %)" if advice.variance_pct is not None else ""
        summary = (
            f"variance of advice {advice.id} at {advice.unit}: advised {advice.expected}, "
            f"measured {advice.matched} {advice.uom}, variance {variance}{pct}"
        )
        self._hold(review, policy, request_fingerprint(review), summary)

    def _accept_variance(self, review: AdviceVarianceReview) -> PostingResult:
        assert self._signing is not None
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=review.user,
                action="variance-accepted",
                object_type="advice",
                object_id=review.advice_id,
                reason=review.reason,
                old="",
                new=canonical_json(
                    {
                        "expected": str(review.expected),
                        "matched": str(review.matched),
                        "uom": review.uom,
                        "request": self._signing["request"],
                        "signatures": self._signing["signatures"],
                    }
                ),
            )
        )
        return PostingResult(MovementId(f"{ADVICE_PREFIX}{review.advice_id}"))

    def _check_open(self, timestamp: str) -> None:
        """Nothing posts with a time inside a closed period (a writer whose clock is
        behind the one that closed it): corrections post in the open period."""
        ends = [p.end for p in self.state.closed_periods]
        if ends and timestamp < max(ends):
            raise PeriodClosed(
                f"the books are closed up to {max(ends)}; this writer's time {timestamp} is "
                "inside a closed period (check the clocks of the instances sharing the ledger)"
            )

    def _corrects(self, timestamp: str) -> ClosedPeriod | None:
        """The closed period a movement of `timestamp` was booked in, if any."""
        for closed in self.state.closed_periods:
            if closed.start <= timestamp < closed.end:
                return closed
        return None

    def set_lot_status(self, req: LotStatusRequest, digest: str) -> PostingResult:
        raise NotImplementedError

    def set_lot_quality(self, req: LotQualityRequest) -> PostingResult:
        raise NotImplementedError

    def master_data(self, update: MasterDataUpdate) -> int | PostingResult:
        raise NotImplementedError

    # -- holding ---------------------------------------------------------------

    def _policy(
        self,
        action: SignatureAction,
        amount: Decimal,
        unit_id: StorageUnitId | None,
        status: LotStatus | None = None,
        *,
        expected: Decimal | None = None,
    ) -> SignaturePolicy | None:
        """The policy that catches this request: of those that apply, the most
        demanding (most signatures, then the highest role). None while a signed request
        posts: its signatures are complete."""
        if self._signing is not None or not self._policies:
            return None  # (a period close is held by PERIOD_CLOSE_POLICY then)
        unit = self.state.units.get(unit_id) if unit_id is not None else None
        # % of the unit's capacity; for an advice variance, % of the advised quantity
        capacity = expected if expected is not None else unit.capacity if unit else None
        applying = [
            p
            for p in self._policies
            if p.action is action
            and (
                status in p.statuses
                if action is SignatureAction.LOT_STATUS
                else action in _EVERY_REQUEST or p.threshold.exceeded(amount, capacity)
            )
        ]
        return max(
            applying, key=lambda p: (p.signatures_required, _ROLES.index(p.role)), default=None
        )

    def _hold(
        self, req: SignedRequest, policy: SignaturePolicy, digest: str, summary: str
    ) -> PostingResult:
        """Record `req` as a pending request instead of posting it. A request that is
        not a posting, the same as one its requester made that still waits (a B2MML
        document sent again, a retried PUT), is that request (two receipts alike can be
        two deliveries: a posting is made one by its Idempotency-Key)."""
        repeatable = isinstance(req, PostingRequest)
        waiting = None if repeatable else self.state.waiting.get((digest, req.user))
        if waiting is not None:
            return PostingResult(MovementId(f"{REQUEST_PREFIX}{waiting}"), replayed=True)
        request_id = str(uuid.uuid4())
        created_at = self._now()
        payload = request_payload(req)
        pending = PendingRequest(
            id=request_id,
            action=policy.action,
            summary=summary,
            payload=payload,
            payload_hash=digest,
            digest=request_digest(request_id, policy.action, payload, req.user, created_at),
            requested_by=req.user,
            created_at=created_at,
            meaning=policy.meaning,
            role=policy.role,
            signatures_required=policy.signatures_required,
            second_person=policy.second_person,
            idempotency_key=req.idempotency_key,
        )
        self.changes.requests[request_id] = pending
        self.changes.new_requests.add(request_id)
        self.state.requests[request_id] = pending
        if not repeatable:
            self.state.waiting[(digest, req.user)] = request_id
        answer = MovementId(pending.request_id)
        if req.idempotency_key:
            self.state.keys[req.idempotency_key] = (answer, digest, ())
        new = _held(pending, policy)
        self._audit_request(pending, req.user, req.reason, old="", new=new)
        return PostingResult(answer)

    # -- signing ---------------------------------------------------------------

    def sign(self, req: SignRequest) -> SignOutcome:
        """Record a signature (or the rejection) of a pending request; the last
        signature posts the request. Every check comes first: a refused signature, or
        a request the ledger refuses now, changes nothing."""
        request_id = req.request_id.removeprefix(REQUEST_PREFIX)
        pending = self.state.requests.get(request_id)
        if pending is None:
            raise UnknownRequest(f"no pending request {REQUEST_PREFIX}{request_id}")
        if pending.state is not RequestState.PENDING:
            raise RequestClosed(
                f"request {pending.request_id} is {pending.state} ({pending.outcome}) "
                "since " + (pending.closed_at or "?") + ": signing it changes nothing"
            )
        self._check_signer(pending, req)
        now = self._now()
        signature = Signature(
            request_id=pending.id,
            seq=len(pending.signatures) + 1,
            signer=req.signer,
            printed_name=req.printed_name or req.signer,
            meaning=pending.meaning if req.decision is Decision.APPROVED else "rejected",
            decision=req.decision,
            signed_at=now,
            digest=pending.digest,
            reason=req.reason,
        )
        signatures = (*pending.signatures, signature)
        posted: PostingResult | None = None
        # The signature comes before what it posts, in the trail too.
        audit = _signature_audit(signature, pending.request_id)
        self.changes.audits.append(audit)
        if req.decision is Decision.REJECTED:
            state, outcome = RequestState.REJECTED, req.reason
        elif sum(s.decision is Decision.APPROVED for s in signatures) < (
            pending.signatures_required
        ):
            state, outcome = RequestState.PENDING, ""
        else:
            try:
                posted = self._post_signed(pending, signatures)
            except BaseException:  # refused now: the signature is not recorded either
                self.changes.audits.remove(audit)
                raise
            state, outcome = RequestState.POSTED, posted.movement_id
        updated = replace(
            pending,
            signatures=signatures,
            state=state,
            outcome=outcome,
            closed_at=None if state is RequestState.PENDING else now,
        )
        self.state.requests[pending.id] = updated
        self.changes.requests[pending.id] = updated
        self.changes.signatures.append(signature)
        if state is not RequestState.PENDING:
            old = canonical_json({"state": str(pending.state)})
            new = canonical_json({"state": str(state), "outcome": outcome})
            self._audit_request(
                updated, req.signer, req.reason or updated.meaning, old=old, new=new
            )
        return SignOutcome(updated, posted)

    def signature_policies(self, update: SignaturePoliciesUpdate) -> bool:
        """Replace the policies (from the next batch on); audited when they change."""
        old, new = policies_json(self._policies), policies_json(update.policies)
        if old == new:
            return False
        self._policies = update.policies
        self.changes.signature_policies = update.policies
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=update.user,
                action="update",
                object_type="signature_policies",
                object_id="signatures",
                reason=update.reason,
                old=old,
                new=new,
            )
        )
        return True

    def signature_refused(self, req: SignRequest, error: Exception) -> None:
        """Audit a signature the rules refused (21 CFR 11.300(d): attempts are kept)."""
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=req.signer,
                action="signature-refused",
                object_type="request",
                object_id=req.request_id,
                reason=f"{type(error).__name__}: {error}",
                old="",
                new=canonical_json({"decision": str(req.decision), "meaning": req.meaning}),
            )
        )

    def _check_signer(self, pending: PendingRequest, req: SignRequest) -> None:
        if not req.role.grants(pending.role):
            raise SignatureRefused(
                f"request {pending.request_id} needs a signer with role {pending.role}; "
                f"{req.signer} has role {req.role}"
            )
        if any(s.signer == req.signer for s in pending.signatures):
            raise SignatureRefused(f"{req.signer} has already signed request {pending.request_id}")
        if req.decision is Decision.REJECTED:
            if not req.reason.strip():
                raise SignatureRefused("a rejection needs a reason")
            return
        if req.meaning.strip().lower() != pending.meaning.lower():
            raise SignatureRefused(
                f"request {pending.request_id} is signed as {pending.meaning!r}, "
                f"not {req.meaning!r}"
            )
        last = len(pending.approvals()) + 1 == pending.signatures_required
        if pending.second_person and last and req.signer == pending.requested_by:
            raise SignatureRefused(
                f"request {pending.request_id} needs a second person: its requester "
                f"{req.signer} cannot give the second signature"
            )

    def _post_signed(
        self, pending: PendingRequest, signatures: tuple[Signature, ...]
    ) -> PostingResult:
        request = pending.request()
        self._signing = {
            "request": pending.request_id,
            "signatures": [
                signed_manifest(s) for s in signatures if s.decision is Decision.APPROVED
            ],
        }
        try:
            if isinstance(request, PostingRequest):
                return self.post(request, pending.payload_hash)
            if isinstance(request, ReversalRequest):
                return self.reverse(request, pending.payload_hash)
            if isinstance(request, ClosePeriodRequest):
                return self.close_period(request, pending.payload_hash)
            if isinstance(request, AdviceVarianceReview):
                return self._accept_variance(request)
            if isinstance(request, LotQualityRequest):
                return self.set_lot_quality(request)
            if isinstance(request, MasterDataUpdate):
                self.master_data(request)
                ids = [MovementId(f"{MATERIAL_PREFIX}{m.id}") for m in request.materials]
                return PostingResult(ids[0], parts=tuple(ids[1:]))
            return self.set_lot_status(request, pending.payload_hash)
        finally:
            self._signing = None

    def _audit_request(
        self, pending: PendingRequest, user: str, reason: str, *, old: str, new: str
    ) -> None:
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=user,
                action=f"request-{pending.state}",
                object_type="request",
                object_id=pending.request_id,
                reason=reason,
                old=old,
                new=new,
            )
        )


def _held(pending: PendingRequest, policy: SignaturePolicy) -> str:
    return canonical_json(
        {
            "action": str(pending.action),
            "summary": pending.summary,
            "payload": pending.payload,
            "digest": pending.digest,
            "policy": policy.describe(),
        }
    )


def _signature_audit(signature: Signature, request_id: str) -> PendingAudit:
    return PendingAudit(
        timestamp=signature.signed_at,
        user=signature.signer,
        action="signature",
        object_type="request",
        object_id=request_id,
        reason=signature.meaning if signature.decision is Decision.APPROVED else signature.reason,
        old="",
        new=canonical_json(signature.as_dict()),
    )
