"""`invops ledger pending | approve | reject | close-period | periods`: requests held for
electronic signatures, and the close of a period of the books (a signed balance report).

Wired into `invops ledger` by `register(...)`, which gets the CLI's shared helpers (so
this module does not import `invops.cli`). Signing re-authenticates: the password is
asked without echo on a terminal, or read as one line with `--password-stdin`; the
`[[users]]` of `--config` sign, with the lockout and audit of every other interface.
"""

import dataclasses
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from inventory_core.domain.model import Source
from inventory_core.domain.signatures import (
    ClosedPeriod,
    PendingRequest,
    RequestState,
    request_document,
)

if TYPE_CHECKING:
    from inventory_core import Ledger
    from invops.config import InvopsConfig

__all__ = ["register", "request_line"]

MAX_PASSWORD_CHARS = 1024

WithLedger = Callable[..., Any]


def request_line(pending: PendingRequest) -> str:
    signed = len(pending.approvals())
    signers = ", ".join(s.manifest() for s in pending.signatures)
    state = f"{pending.state}" + (f" -> {pending.outcome}" if pending.outcome else "")
    who = f"{pending.role}, second person" if pending.second_person else str(pending.role)
    return (
        f"{pending.request_id} {pending.action}: {pending.summary}; requested by "
        f"{pending.requested_by} at {pending.created_at}; needs {pending.signatures_required} "
        f"x {pending.meaning!r} ({who}); signed {signed}; {state}"
        + (f"; {signers}" if signers else "")
    )


def _password(from_stdin: bool, fail: Callable[[str], NoReturn]) -> str:
    if from_stdin:
        raw = sys.stdin.buffer.readline(4 * MAX_PASSWORD_CHARS + 2)
        try:
            return raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            fail("the password on standard input is not UTF-8 text")
    try:
        return getpass.getpass("Password (re-authentication for the signature): ")
    except EOFError:
        fail("no password entered (use --password-stdin to pipe it)")


def register(
    ledger_app: typer.Typer,
    *,
    with_ledger: WithLedger,
    print_json: Callable[[Any], None],
    load_config: Callable[[Path], "InvopsConfig"],
    fail: Callable[[str], NoReturn],
    url_option: Any,
    config_option: Any,
    json_option: Any,
    timestamp: Callable[[str, str], str],
    who: Callable[[str | None], str],
) -> None:
    """Add the signing and period commands to `invops ledger`."""

    @ledger_app.command("pending")
    def ledger_pending(
        every: Annotated[
            bool, typer.Option("--all", help="Also the requests already posted or rejected.")
        ] = False,
        url: url_option = None,
        config: config_option = None,
        as_json: json_option = False,
    ) -> None:
        """List the requests waiting for electronic signatures (the oldest first)."""
        state = None if every else RequestState.PENDING

        async def action(ledger: "Ledger") -> list[PendingRequest]:
            return await ledger.pending_requests(state=state)

        found: list[PendingRequest] = with_ledger(url, config, action, read_only=True)
        if as_json:
            print_json([request_document(p) for p in found])
            return
        if not found:
            typer.echo("no requests wait for signatures" if not every else "no requests")
        for pending in found:
            typer.echo(request_line(pending))

    def sign(
        request_id: str,
        user: str,
        config: Path,
        url: str | None,
        password_stdin: bool,
        as_json: bool,
        act: Callable[[Any, str], Awaitable[Any]],
    ) -> None:
        loaded = load_config(config)
        if not loaded.users:
            fail(f"{config} has no [[users]]: nobody can sign with it")
        password = _password(password_stdin, fail)

        async def action(ledger: "Ledger") -> Any:
            from invops.wiring import signing_service

            service = signing_service(loaded, ledger)
            try:
                return await act(service, password)
            finally:
                service.close()

        outcome = with_ledger(url, config, action)
        if as_json:
            print_json(
                {
                    "request": request_document(outcome.request),
                    "posted": outcome.posted.movement_id if outcome.posted else None,
                }
            )
            return
        typer.echo(request_line(outcome.request))

    @ledger_app.command("close-period")
    def ledger_close_period(
        start: Annotated[str, typer.Option("--from", help="Period start (UTC, included).")],
        end: Annotated[str, typer.Option("--to", help="Period end (UTC, excluded; passed).")],
        reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
        user: Annotated[
            str | None, typer.Option("--user", help="Who asks (default: the login name).")
        ] = None,
        key: Annotated[str | None, typer.Option("--key", help="Idempotency key.")] = None,
        url: url_option = None,
        config: config_option = None,
        as_json: json_option = False,
    ) -> None:
        """Ask to close a period: its balance report is held for a signature (`reviewed`)."""
        begin, finish = timestamp(start, "--from"), timestamp(end, "--to")

        async def action(ledger: "Ledger") -> PendingRequest:
            result = await ledger.request_period_close(
                begin, finish, user=who(user), reason=reason, idempotency_key=key,
                source=Source.CLI,
            )  # fmt: skip
            return await ledger.pending_request(result.movement_id)

        pending: PendingRequest = with_ledger(url, config, action)
        if as_json:
            print_json(request_document(pending))
            return
        typer.echo(
            f"{request_line(pending)}\nsign it with: invops ledger approve "
            f"{pending.request_id} --meaning {pending.meaning} --user NAME --config FILE"
        )

    @ledger_app.command("periods")
    def ledger_periods(
        url: url_option = None,
        config: config_option = None,
        as_json: json_option = False,
    ) -> None:
        """The closed periods of the books, the oldest first."""

        async def action(ledger: "Ledger") -> list[ClosedPeriod]:
            return await ledger.closed_periods()

        periods: list[ClosedPeriod] = with_ledger(url, config, action, read_only=True)
        if as_json:
            print_json([dataclasses.asdict(p) for p in periods])
            return
        if not periods:
            typer.echo("no period is closed")
        for p in periods:
            typer.echo(
                f"{p.start} to {p.end}: closed {p.closed_at} on {p.request_id} (asked by "
                f"{p.requested_by}), balance report sha256 {p.report_digest}"
            )

    @ledger_app.command("approve")
    def ledger_approve(
        request_id: Annotated[str, typer.Argument(help="The request (request:...).")],
        meaning: Annotated[
            str, typer.Option("--meaning", help="What the signature means (the policy's).")
        ],
        user: Annotated[str, typer.Option("--user", help="The signer, a [[users]] name.")],
        config: Annotated[Path, typer.Option("--config", "-c", help="Config with [[users]].")],
        password_stdin: Annotated[
            bool, typer.Option("--password-stdin", help="Read the password from stdin.")
        ] = False,
        url: url_option = None,
        as_json: json_option = False,
    ) -> None:
        """Sign a pending request; its last signature posts it."""
        sign(
            request_id, user, config, url, password_stdin, as_json,
            lambda service, password: service.approve(
                request_id, user, password, meaning, source=Source.CLI
            ),
        )  # fmt: skip

    @ledger_app.command("reject")
    def ledger_reject(
        request_id: Annotated[str, typer.Argument(help="The request (request:...).")],
        reason: Annotated[str, typer.Option("--reason", help="Why it is rejected (audited).")],
        user: Annotated[str, typer.Option("--user", help="The signer, a [[users]] name.")],
        config: Annotated[Path, typer.Option("--config", "-c", help="Config with [[users]].")],
        password_stdin: Annotated[
            bool, typer.Option("--password-stdin", help="Read the password from stdin.")
        ] = False,
        url: url_option = None,
        as_json: json_option = False,
    ) -> None:
        """Reject a pending request (signed like an approval): nothing is posted."""
        sign(
            request_id, user, config, url, password_stdin, as_json,
            lambda service, password: service.reject(
                request_id, user, password, reason, source=Source.CLI
            ),
        )  # fmt: skip
