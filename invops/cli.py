"""The `invops` command line (typer). User errors: one line on stderr, non-zero exit."""

from __future__ import annotations

import asyncio
import csv
import getpass
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from inventory_core.clock import format_timestamp, parse_timestamp
from inventory_core.domain.advices import (
    ADVICE_PREFIX,
    Advice,
    AdviceDirection,
    advice_document,
)
from inventory_core.domain.errors import InventoryError, ValidationError
from inventory_core.domain.lot_quality import LotQualityRequest, parse_property
from inventory_core.domain.lot_quality import describe as describe_quality
from inventory_core.domain.model import (
    MAX_CURSOR,
    Lot,
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
from inventory_core.domain.posting import DEFAULT_CAPACITY_MARGIN_PCT, movement_document
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    PendingRequest,
    request_document,
    signature_lines,
)
from inventory_core.domain.text import escape_controls, shown
from inventory_core.domain.units import format_decimal, parse_quantity
from invops import __version__, startup
from invops.cli_config import load_config_or_exit
from invops.logs import LOG_LEVELS, LogFormat, configure_logging, default_level
from invops.service_cli import register as register_service
from invops.signing_cli import register as register_signing
from invops.signing_cli import request_line
from invops.simulate_cli import register as register_simulate
from invops.users_cli import register as register_users

if TYPE_CHECKING:
    # Start-up time: a command imports the ledger (SQLAlchemy, Alembic) or the
    # config (pydantic) only when it uses them; the service and the simulators
    # (asyncua, pymodbus, snap7, prometheus_client) only in `run`, `demo`, `simulate`.
    from inventory_core import Ledger
    from invops.config import InvopsConfig

T = TypeVar("T")
EXIT_USER_ERROR = 1

app = typer.Typer(
    name="invops",
    help="ISA-95 inventory operations: PLC measurements to an audited ledger, over OPC UA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich panels show `--json <bool>` as if a flag took a value.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)
db_app = typer.Typer(help="Ledger database schema.", no_args_is_help=True)
ledger_app = typer.Typer(
    help="Post, query, trace, reconcile, verify and export the ledger.", no_args_is_help=True
)
opcua_app = typer.Typer(help="The OPC UA information model.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
app.add_typer(opcua_app, name="opcua")
audit_app = typer.Typer(help="The audit trail, for review.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
register_simulate(app)
register_service(app)
register_users(app)

_debug = False
# The request fields that core messages name, as `ledger post` spells them.
_POST_OPTIONS = {"from_unit": "--from", "to_unit": "--to"}


class Direction(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    B2MML = "b2mml"


class PostKind(StrEnum):
    RECEIPT = "receipt"
    ISSUE = "issue"
    PRODUCTION = "production"
    TRANSFER = "transfer"
    ADJUSTMENT = "adjustment"
    COUNT = "count"
    SCRAP = "scrap"


# -- common options ------------------------------------------------------------

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Ledger URL (else INVOPS_LEDGER_URL, else the ledger url in --config).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file: ledger URL and master data (materials, units).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
UserOption = Annotated[
    str | None,
    typer.Option(
        "--user",
        help="Who is doing this (audit trail); default INVOPS_USER or the login name.",
        show_default=False,
    ),
]


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    typer.echo(f"invops: error: {message}", err=True)
    raise typer.Exit(code)


def _user(user: str | None) -> str:
    if user:
        return user
    if env := os.environ.get("INVOPS_USER"):
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _cli_writer_id() -> str:
    return f"cli@{socket.gethostname()}"[:64]


def _resolve(url: str | None, config: Path | None) -> tuple[str, InvopsConfig | None]:
    loaded = load_config_or_exit(config) if config is not None else None
    if url:
        return url, loaded
    if env := os.environ.get("INVOPS_LEDGER_URL"):
        return env, loaded
    if loaded is not None:
        return loaded.ledger.url, loaded
    fail("no ledger given: use --url URL, set INVOPS_LEDGER_URL, or --config FILE")


def _run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn domain and ledger errors into one line on stderr."""
    startup.loaded()
    try:
        return asyncio.run(_as_coroutine(coro_factory))
    except InventoryError as exc:
        if _debug:
            raise
        fail(shown(str(exc), 500))
    except KeyboardInterrupt:
        fail("interrupted", 130)


async def _as_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def _with_ledger(
    url: str | None,
    config: Path | None,
    action: Callable[[Ledger], Awaitable[T]],
    *,
    migrate: bool = False,
    read_only: bool = False,
) -> T:
    """Run `action` on the ledger. With `--config`, its master data is synchronised into
    the ledger first, except for `read_only` commands: those write nothing, ever."""
    from inventory_core import open_ledger

    ledger_url, loaded = _resolve(url, config)

    async def go() -> T:
        margin = loaded.ledger.capacity_margin_pct if loaded else DEFAULT_CAPACITY_MARGIN_PCT
        async with open_ledger(
            ledger_url, writer_id=_cli_writer_id(), migrate=migrate, capacity_margin_pct=margin
        ) as ledger:
            if loaded is not None and not read_only:
                await ledger.sync_master_data(
                    loaded.material_definitions(),
                    loaded.storage_unit_definitions(),
                    user=_user(None),
                )
                await ledger.set_signature_policies(loaded.signature_policies(), user=_user(None))
            return await action(ledger)

    return _run(go)


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return format_decimal(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _movement_json(m: Any) -> dict[str, Any]:
    return {"cursor": m.seq, **movement_document(m)}


def _table(headers: list[str], rows: list[list[str]]) -> None:
    """Aligned columns; each cell's newlines and controls are escaped (`\\n`, `\\x1b`, ...) so
    that one row stays one line on the terminal (--json keeps the exact text)."""
    rows = [[escape_controls(cell) for cell in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- top level -------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"invops {__version__}")
        raise typer.Exit()


def _log_level(value: str | None) -> str | None:
    if value is None:
        return None
    if value.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


@app.callback()
def main_callback(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="INVOPS_LOG_FORMAT",
            case_sensitive=False,
            help="Log lines on stderr: console (human-readable, coloured on a terminal) or "
            "json (one JSON object per line); auto picks console.",
        ),
    ] = LogFormat.AUTO,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            envvar="INVOPS_LOG_LEVEL",
            callback=_log_level,
            metavar="[DEBUG|INFO|WARNING|ERROR|CRITICAL]",
            help="Least severe level logged (default: INFO for run, demo and simulate; "
            "WARNING for the other commands).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug
    configure_logging(log_format, log_level or default_level(ctx.invoked_subcommand))


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="The TOML config file to validate.")],
) -> None:
    """Validate a config: exit 0, or exit 2 listing every problem as `file:line: path: message`."""
    config = load_config_or_exit(file)
    typer.echo(
        f"{file}: ok (site {config.site.name}, {len(config.materials)} materials, "
        f"{len(config.storage_units)} storage units)"
    )


@db_app.command("upgrade")
def db_upgrade(url: UrlOption = None, config: ConfigOption = None) -> None:
    """Create or migrate the ledger schema (Alembic) to the newest revision."""
    from inventory_core.store import describe_url, upgrade_schema

    ledger_url, _ = _resolve(url, config)
    before, after = _run(lambda: upgrade_schema(ledger_url))
    typer.echo(f"ledger at {describe_url(ledger_url)}: schema {after} (was {before or 'empty'})")


# -- ledger ----------------------------------------------------------------------


@ledger_app.command("post")
def ledger_post(
    kind: Annotated[PostKind, typer.Argument(help="Movement kind.", case_sensitive=False)],
    material: Annotated[str, typer.Option("--material", help="MaterialDefinitionID.")],
    qty: Annotated[
        str,
        typer.Option("--qty", help="Quantity (adjustment: signed delta; count: counted quantity)."),
    ],
    uom: Annotated[str, typer.Option("--uom", help="Unit of the quantity: kg, g, t, L, mL, m3.")],
    lot: Annotated[
        str | None,
        typer.Option(
            "--lot",
            help="LotID. A lot is created by its first receipt or production (a count into a "
            "new lot creates it too); adjustment needs an existing lot. Issue, transfer and "
            "scrap without --lot draw the lot(s) the source unit's lot_handling picks.",
        ),
    ] = None,
    from_unit: Annotated[
        str | None, typer.Option("--from", help="Source storage unit (issue, transfer, scrap).")
    ] = None,
    to_unit: Annotated[
        str | None,
        typer.Option(
            "--to", help="Target storage unit (receipt, production, transfer, adjustment, count)."
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="Idempotency key: posting again with it returns the first movement."
        ),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required for adjustment and scrap).")
    ] = "",
    user: UserOption = None,
    consumed: Annotated[
        list[str] | None,
        typer.Option(
            "--consumed",
            metavar="LOT[=QTY[@UNIT]]",
            help="Production: a consumed lot (repeatable). With =QTY (in the lot's material "
            "base unit) the genealogy link carries the quantity; with @UNIT that quantity is "
            "drawn from the unit in the same posting (a measured unit's gauge books its draw "
            "itself). Give a quantity for every consumed lot or for none.",
        ),
    ] = None,
    expiry: Annotated[
        str | None, typer.Option("--expiry", help="Expiry date of a new lot (YYYY-MM-DD).")
    ] = None,
    ref: Annotated[
        str,
        typer.Option(
            "--ref",
            metavar="DOCUMENT",
            help="The business document behind it (ERP delivery or order number).",
        ),
    ] = "",
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Post a receipt, issue, production, transfer, adjustment, count or scrap.

    A receipt, issue, transfer, production or scrap into or out of a measured unit (booking =
    "measured") books nothing at once: it is recorded as an advice, and the PLC-derived
    movements that follow book it to the advised lot at the measured quantity."""
    try:
        quantity = parse_quantity(qty)
    except InventoryError as exc:
        fail(f"--qty: {exc}")
    try:
        expiry_date = date.fromisoformat(expiry) if expiry else None
    except ValueError:
        fail(f"--expiry {expiry!r} is not a date (YYYY-MM-DD)")
    request = PostingRequest(
        kind=MovementKind(kind.value),
        material=MaterialId(material),
        lot=None if lot is None else LotId(lot),
        quantity=quantity,
        uom=uom,
        from_unit=StorageUnitId(from_unit) if from_unit else None,
        to_unit=StorageUnitId(to_unit) if to_unit else None,
        idempotency_key=key,
        reason=reason,
        user=_user(user),
        source=Source.CLI,
        expiry=expiry_date,
        ref=ref,
        **_consumption(consumed or []),
    )

    async def action(ledger: Ledger) -> Any:
        try:
            result = await ledger.post(request)
        except ValidationError as exc:
            worded = _in_option_words(str(exc))
            if worded == str(exc):
                raise
            raise type(exc)(worded) from exc
        if result.movement_id.startswith(ADVICE_PREFIX):
            return result, await ledger.advice(result.movement_id)
        if result.movement_id.startswith(REQUEST_PREFIX):
            return result, await ledger.pending_request(result.movement_id)
        return result, await ledger.movement(result.movement_id)

    result, movement = _with_ledger(url, config, action)
    if isinstance(movement, PendingRequest):
        _print_held(movement, replayed=result.replayed, as_json=as_json)
        return
    if isinstance(movement, Advice):
        _print_advice(movement, replayed=result.replayed, as_json=as_json)
        return
    if as_json:
        document = {"replayed": result.replayed, "movement": _movement_json(movement)}
        _print_json(document | {"parts": list(result.parts)} if result.parts else document)
        return
    note = " (idempotency key seen before: first movement returned)" if result.replayed else ""
    parts = f" (+{len(result.parts)} more movements of this posting)" if result.parts else ""
    typer.echo(
        f"{movement.id} {movement.kind} {format_decimal(movement.quantity)} {movement.uom} "
        f"of lot {movement.lot}{parts}{note}"
    )


def _consumption(options: list[str]) -> dict[str, Any]:
    """`--consumed LOT[=QTY[@UNIT]]` options -> the PostingRequest consumption fields."""
    lots: list[LotId] = []
    quantities: list[Decimal] = []
    units: list[StorageUnitId | None] = []
    for option in options:
        lot, _, rest = option.partition("=")
        quantity, _, unit = rest.partition("@")
        lots.append(LotId(lot.strip()))
        if rest:
            try:
                quantities.append(parse_quantity(quantity.strip()))
            except InventoryError as exc:
                fail(f"--consumed {option!r}: {exc}")
            units.append(StorageUnitId(unit.strip()) if unit.strip() else None)
    if quantities and len(quantities) != len(lots):
        fail("--consumed: give a quantity (LOT=QTY) for every consumed lot or for none")
    return {
        "consumed_lots": tuple(lots),
        "consumed_quantities": tuple(quantities),
        "consumed_units": tuple(units) if any(units) else (),
    }


def _held_note(answer: str) -> str:
    if not answer.startswith(REQUEST_PREFIX):
        return ""
    return " (held for signatures, nothing posted yet: see invops ledger pending)"


def _print_held(pending: PendingRequest, *, replayed: bool, as_json: bool) -> None:
    """A posting a `[[signatures]]` policy held: nothing posted until it is signed."""
    if as_json:
        _print_json({"replayed": replayed, "request": request_document(pending)})
        return
    note = " (idempotency key seen before: the same request)" if replayed else ""
    typer.echo(
        f"{pending.request_id} held for signatures, nothing posted yet{note}: "
        f"{request_line(pending)}\n"
        f"sign it with: invops ledger approve {pending.request_id} --meaning "
        f"{pending.meaning} --user NAME --config FILE"
    )


def _print_advice(advice: Advice, *, replayed: bool, as_json: bool) -> None:
    if as_json:
        _print_json({"replayed": replayed, "advice": advice_document(advice)})
        return
    note = " (idempotency key seen before: first advice returned)" if replayed else ""
    where = f"{'into' if advice.direction is AdviceDirection.IN else 'out of'} {advice.unit}"
    typer.echo(
        f"{advice.reference} {advice.kind} of {format_decimal(advice.expected)} {advice.uom} "
        f"of lot {advice.lot or '(by lot handling)'} {where} advised{note}: {advice.unit} is "
        "measured, so its gauge books the change when the material moves "
        "(see `invops ledger advices`)"
    )


@ledger_app.command("advices")
def ledger_advices(
    open_only: Annotated[
        bool, typer.Option("--open", help="Only advices still waiting for their change.")
    ] = False,
    unit: Annotated[str | None, typer.Option("--unit", help="Only this storage unit.")] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Receipt and issue advices of measured units, their matches and variances."""
    advices = _with_ledger(
        url,
        config,
        lambda ledger: ledger.advices(state="open" if open_only else None, unit=unit),
        read_only=True,
    )
    if as_json:
        _print_json({"advices": [advice_document(a) for a in advices]})
        return
    _table(
        ["ADVICE", "STATE", "UNIT", "DIR", "KIND", "LOT", "EXPECTED", "MATCHED", "VARIANCE",
         "UOM", "REF", "CREATED"],
        [
            [
                a.reference, str(a.state), a.unit, str(a.direction), str(a.kind), a.lot or "-",
                format_decimal(a.expected), format_decimal(a.matched),
                "-" if a.variance is None else f"{format_decimal(a.variance)} ({a.variance_pct} %)",
                a.uom, a.ref or "-", a.created_at,
            ]
            for a in advices
        ],
    )  # fmt: skip


def _in_option_words(message: str) -> str:
    """`issue needs a source unit (from_unit)` -> `... (--from)`: the option to give."""
    for field, option in _POST_OPTIONS.items():
        message = message.replace(f"({field})", f"({option})")
    return message


@ledger_app.command("balance")
def ledger_balance(
    unit: Annotated[str | None, typer.Option("--unit", help="Only this storage unit.")] = None,
    lot: Annotated[str | None, typer.Option("--lot", help="Only this lot.")] = None,
    material: Annotated[str | None, typer.Option("--material", help="Only this material.")] = None,
    zero: Annotated[bool, typer.Option("--zero", help="Also list balances that are zero.")] = False,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Book balances per storage unit and lot, in each material's base unit."""
    balances = _with_ledger(
        url, config, lambda ledger: ledger.balances(unit, lot, material), read_only=True
    )
    balances = [b for b in balances if zero or b.quantity != 0]
    if as_json:
        _print_json(
            {
                "balances": [
                    {
                        "unit": b.unit,
                        "lot": b.lot,
                        "material": b.material,
                        "quantity": b.quantity,
                        "uom": b.uom,
                    }
                    for b in balances
                ]
            }
        )
        return
    _table(
        ["UNIT", "LOT", "MATERIAL", "QUANTITY", "UOM"],
        [[b.unit, b.lot, b.material, format_decimal(b.quantity), b.uom] for b in balances],
    )


@ledger_app.command("history")
def ledger_history(
    unit: Annotated[
        str | None, typer.Option("--unit", help="Only movements touching this unit.")
    ] = None,
    lot: Annotated[str | None, typer.Option("--lot", help="Only movements of this lot.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only from this time (ISO 8601, UTC if no zone).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, metavar="N", help="At most N movements: the N oldest that match."
        ),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last",
            min=1,
            metavar="N",
            help="Only the N newest movements that match, still printed oldest first "
            "(like tail -n N). Not with --limit.",
        ),
    ] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Movements in posting order, oldest first (--last N: the N newest)."""
    if limit is not None and last is not None:
        fail("use either --limit N (the oldest) or --last N (the newest), not both")
    since_text = _time_option("--since", since)

    async def action(ledger: Ledger) -> list[Any]:
        if last is None:
            return await ledger.history(unit, lot, since_text, limit=limit)
        newest = await ledger.history(unit, lot, since_text, limit=last, newest_first=True)
        return newest[::-1]

    movements = _with_ledger(url, config, action, read_only=True)
    if as_json:
        _print_json({"movements": [_movement_json(m) for m in movements]})
        return
    _table(
        [
            "TIMESTAMP",
            "ID",
            "KIND",
            "LOT",
            "FROM",
            "TO",
            "QUANTITY",
            "UOM",
            "USER",
            "SOURCE",
            "SIGNATURES",
            "REASON",
        ],
        [
            [
                m.timestamp,
                m.id,
                str(m.kind),
                m.lot,
                m.from_unit or "-",
                m.to_unit or "-",
                format_decimal(m.quantity),
                m.uom,
                m.user,
                str(m.source),
                "; ".join(signature_lines(m.details)) or "-",
                m.reason,
            ]
            for m in movements
        ],
    )


@ledger_app.command("trace")
def ledger_trace(
    lot: Annotated[str, typer.Option("--lot", help="The lot to trace.")],
    direction: Annotated[
        Direction, typer.Option("--direction", help="forward: where used; backward: where from.")
    ] = Direction.BACKWARD,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Lot genealogy: every lot this one went into (forward) or came from (backward)."""
    forward = direction is Direction.FORWARD

    async def action(ledger: Ledger) -> Any:
        if not await ledger.lots(lot):
            raise_unknown_lot(lot)
        links = await ledger.trace(lot, forward=forward)
        reached = [lot, *dict.fromkeys(link.child if forward else link.parent for link in links)]
        movements = {name: await ledger.history(lot=name) for name in reached}
        return links, movements, await ledger.mass_balance(links)

    links, movements, balance = _with_ledger(url, config, action, read_only=True)
    checks = {c.movement_id: c for c in balance}
    if as_json:
        _print_json(
            {
                "lot": lot,
                "direction": direction.value,
                "links": [
                    {
                        "parent": k.parent,
                        "child": k.child,
                        "movement_id": k.movement_id,
                        "depth": k.depth,
                        "quantity": k.quantity,
                    }
                    for k in links
                ],
                "mass_balance": [
                    {
                        "movement_id": c.movement_id,
                        "lot": c.lot,
                        "inputs": c.inputs,
                        "output": c.output,
                        "conserved": c.conserved,
                    }
                    for c in checks.values()
                ],
                "lots": {
                    name: {
                        "locations": sorted({m.unit for m in ms if m.unit}),
                        "movements": [_movement_json(m) for m in ms],
                    }
                    for name, ms in movements.items()
                },
            }
        )
        return
    typer.echo(f"{direction.value} trace of lot {escape_controls(lot)}:")
    if not links:
        typer.echo("  (no genealogy links)")
    for link in links:
        other = escape_controls(link.child if forward else link.parent)
        amount = "" if link.quantity is None else f": {format_decimal(link.quantity)}"
        check = checks.get(link.movement_id)
        flag = (
            ""
            if check is None or check.conserved is not False
            else (
                f"  MASS NOT CONSERVED: inputs {format_decimal(check.inputs or Decimal(0))}, "
                f"output {format_decimal(check.output)}"
            )
        )
        typer.echo(
            f"  {'  ' * (link.depth - 1)}{'->' if forward else '<-'} {other}{amount}"
            f"  (movement {link.movement_id}){flag}"
        )
    for name, ms in movements.items():
        places = escape_controls(", ".join(sorted({m.unit for m in ms if m.unit})) or "-")
        typer.echo(f"  lot {escape_controls(name)}: {len(ms)} movements; locations: {places}")
        for m in ms:  # the signed records of the lot, with their signatures
            for line in signature_lines(m.details):
                typer.echo(f"    {m.id} {m.kind} signed: {escape_controls(line)}")


def raise_unknown_lot(lot: str) -> NoReturn:
    from inventory_core.domain.errors import UnknownLot

    raise UnknownLot(f"lot {lot} does not exist")


@ledger_app.command("balance-report")
def ledger_balance_report(
    start: Annotated[
        str, typer.Option("--from", help="Period start (ISO 8601, UTC if no zone), included.")
    ],
    end: Annotated[
        str, typer.Option("--to", help="Period end (ISO 8601, UTC if no zone), excluded.")
    ],
    unit: Annotated[str | None, typer.Option("--unit", help="Only this storage unit.")] = None,
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Period mass balance per unit and material: opening book, receipts, issues,
    production in and out, transfers in and out, adjustments, counts, scrap, reversals
    (signed: + into the unit), closing book, the last good measurement at or before the
    end, and measured - closing (absolute and % of the closing book)."""
    from inventory_core.domain.mass_balance import COLUMNS

    if as_json and as_csv:
        fail("use either --json or --csv, not both")
    start_text, end_text = _time_option("--from", start), _time_option("--to", end)
    assert start_text is not None and end_text is not None
    lines = _with_ledger(
        url,
        config,
        lambda ledger: ledger.mass_balance_report(start_text, end_text, unit),
        read_only=True,
    )
    documents = [line.document() for line in lines]
    if as_json:
        _print_json({"from": start_text, "to": end_text, "unit": unit, "lines": documents})
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, list(documents[0]) if documents else ["unit"])
        writer.writeheader()
        writer.writerows(documents)
        return
    typer.echo(f"period {start_text} to {end_text}" + (f", unit {unit}" if unit else ""))
    headers = ["unit", "material", "uom", "opening", *COLUMNS, "closing", "measured", "variance",
               "variance_pct"]  # fmt: skip
    _table(headers, [[str(d[h]) if d[h] is not None else "-" for h in headers] for d in documents])


@ledger_app.command("reconcile")
def ledger_reconcile(
    url: UrlOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Book vs last measured quantity per storage unit (discrepancy = measured - book)."""
    lines = _with_ledger(url, config, lambda ledger: ledger.reconciliation(), read_only=True)
    if as_json:
        _print_json(
            {
                "units": [
                    {
                        "unit": x.unit,
                        "material": x.material,
                        "uom": x.uom,
                        "book": x.book,
                        "measured": x.measured,
                        "measured_at": x.measured_at,
                        "discrepancy": x.discrepancy,
                        "discrepancy_pct_of_capacity": x.discrepancy_pct_of_capacity,
                        "capacity": x.capacity,
                    }
                    for x in lines
                ]
            }
        )
        return

    def text(value: Decimal | None) -> str:
        return "-" if value is None else format_decimal(value)

    _table(
        ["UNIT", "MATERIAL", "BOOK", "MEASURED", "DISCREPANCY", "% CAP", "UOM", "MEASURED AT"],
        [
            [
                x.unit,
                x.material or "-",
                text(x.book),
                text(x.measured),
                text(x.discrepancy),
                text(x.discrepancy_pct_of_capacity),
                x.uom,
                x.measured_at or "-",
            ]
            for x in lines
        ],
    )


@ledger_app.command("verify")
def ledger_verify(
    url: UrlOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Check the audit hash chains, movements against their records, balances; exit 1 if broken."""
    report = _with_ledger(url, config, lambda ledger: ledger.verify(), read_only=True)
    if as_json:
        _print_json(
            {
                "ok": report.ok,
                "chains": report.chains,
                "records": report.records,
                "movements": report.movements,
                "problems": [
                    {"chain": p.chain, "seq": p.seq, "record_id": p.record_id, "message": p.message}
                    for p in report.problems
                ],
            }
        )
    else:
        chains = ", ".join(f"{w} ({n} records)" for w, n in sorted(report.chains.items())) or "none"
        if report.ok:
            typer.echo(
                f"audit trail intact: {report.records} records, "
                f"{report.movements} movements; chains: {chains}"
            )
    if not report.ok:
        first = report.problems[0]
        where = f"chain {first.chain}" + (f" seq {first.seq}" if first.seq is not None else "")
        where += f" (row id {first.record_id})" if first.record_id is not None else ""
        typer.echo(f"invops: audit trail BROKEN at {where}: {first.message}", err=True)
        for more in report.problems[1:]:
            seq = "" if more.seq is None else f" seq {more.seq}"
            typer.echo(f"  also: {more.chain}{seq}: {more.message}", err=True)
        raise typer.Exit(1)


@ledger_app.command("lot-quality")
def ledger_lot_quality(
    lot: Annotated[str, typer.Option("--lot", help="The lot.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    properties: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            help="NAME=VALUE[ UNIT], repeatable (e.g. 'density=0.7893 kg/L'); replaces the "
            "lot's properties. A density is used for this lot's conversions.",
        ),
    ] = None,
    retest: Annotated[
        str | None, typer.Option("--retest", help="Retest date (YYYY-MM-DD).")
    ] = None,
    expiry: Annotated[
        str | None, typer.Option("--expiry", help="Expiry date (YYYY-MM-DD).")
    ] = None,
    certificate: Annotated[
        str | None, typer.Option("--certificate", help="Certificate of analysis reference.")
    ] = None,
    user: UserOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a lot's quality data: properties, retest and expiry dates, certificate; audited."""
    try:
        request = LotQualityRequest(
            LotId(lot), reason, _user(user), Source.CLI,
            properties=None if properties is None else tuple(map(parse_property, properties)),
            retest=_date_option("--retest", retest), expiry=_date_option("--expiry", expiry),
            certificate=certificate,
        )  # fmt: skip
    except InventoryError as exc:
        fail(str(exc))

    async def action(ledger: Ledger) -> Lot | PendingRequest:
        result = await ledger.set_lot_quality(request)
        if result.movement_id.startswith(REQUEST_PREFIX):
            return await ledger.pending_request(result.movement_id)
        assert result.lot is not None
        return result.lot

    updated = _with_ledger(url, config, action)
    if isinstance(updated, PendingRequest):  # a `master-data` policy: nothing changed yet
        _print_held(updated, replayed=False, as_json=as_json)
        return
    document = {"lot": updated.id, "status": str(updated.status),
                "expiry": updated.expiry.isoformat() if updated.expiry else None,
                **updated.quality.document()}  # fmt: skip
    if as_json:
        _print_json(document)
    else:
        typer.echo(f"lot {updated.id}: {describe_quality(updated.quality)}")


def _date_option(name: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{name} {value!r} is not a date (YYYY-MM-DD)")


@ledger_app.command("lot-status")
def ledger_lot_status(
    lot: Annotated[str, typer.Option("--lot", help="The lot.")],
    status: Annotated[
        LotStatus, typer.Option("--status", help="New status.", case_sensitive=False)
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    user: UserOption = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key.")] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a lot's status (quarantine, released, hold, rejected, expired); audited."""
    request = LotStatusRequest(LotId(lot), status, reason, _user(user), Source.CLI, key)
    result = _with_ledger(url, config, lambda ledger: ledger.set_lot_status(request))
    if as_json:
        _print_json(
            {
                "movement_id": result.movement_id,
                "lot": lot,
                "status": status.value,
                "replayed": result.replayed,
            }
        )
    else:
        typer.echo(
            f"{result.movement_id} lot {lot} status {status.value}{_held_note(result.movement_id)}"
        )


@ledger_app.command("reverse")
def ledger_reverse(
    movement_id: Annotated[str, typer.Argument(help="Id of the movement to reverse.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    user: UserOption = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key.")] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Post the exact negation of an earlier movement (the only way to correct the ledger)."""
    request = ReversalRequest(MovementId(movement_id), reason, _user(user), Source.CLI, key)
    result = _with_ledger(url, config, lambda ledger: ledger.reverse(request))
    if as_json:
        _print_json(
            {
                "movement_id": result.movement_id,
                "reverses": movement_id,
                "replayed": result.replayed,
            }
        )
    else:
        typer.echo(f"{result.movement_id} reverses {movement_id}{_held_note(result.movement_id)}")


class B2mmlDocument(StrEnum):
    MOVEMENTS = "movements"
    MATERIAL_INFORMATION = "material-information"


@ledger_app.command("export")
def ledger_export(
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="jsonl: one movement per line. b2mml: a B2MML V0700 document "
            "(ShowOperationsPerformance of the movements, or --document material-information).",
        ),
    ],
    since: Annotated[
        str,
        typer.Option(
            "--since", help="Cursor: export movements after this one (0 = from the start)."
        ),
    ] = "0",
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many movements.")
    ] = None,
    document: Annotated[
        B2mmlDocument,
        typer.Option(
            "--document",
            help="With --format b2mml: movements (after --since) or material-information "
            "(ShowMaterialInformation: materials, lots with status, quantity and location).",
        ),
    ] = B2mmlDocument.MOVEMENTS,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Movements for ERP (Level 4): JSON lines (each line's `cursor` resumes after it) or
    B2MML; the B2MML movement document's last SegmentData `Cursor` resumes after it."""
    try:
        cursor = int(since)
        if not 0 <= cursor <= MAX_CURSOR:
            raise ValueError
    except ValueError:
        fail(f"--since {since!r} is not a cursor (a non-negative integer from a previous export)")
    if fmt is ExportFormat.B2MML:
        _export_b2mml(document, cursor, limit, url, config)
        return
    movements = _with_ledger(
        url, config, lambda ledger: ledger.export(after_seq=cursor, limit=limit), read_only=True
    )
    out = sys.stdout
    for m in movements:
        out.write(json.dumps(_movement_json(m), ensure_ascii=False, separators=(",", ":")) + "\n")


def _export_b2mml(
    document: B2mmlDocument, cursor: int, limit: int | None, url: str | None, config: Path | None
) -> None:
    from inventory_core.b2mml.apply import export_material_information, export_movements

    if document is B2mmlDocument.MATERIAL_INFORMATION:
        body = _with_ledger(url, config, export_material_information, read_only=True)
    else:
        body, last = _with_ledger(
            url, config, lambda ledger: export_movements(ledger, cursor, limit), read_only=True
        )
        if body is None:
            typer.echo(f"no movements after cursor {cursor}: nothing written", err=True)
            return
        typer.echo(f"movements up to cursor {last}", err=True)
    sys.stdout.buffer.write(body)


class ImportFormat(StrEnum):
    B2MML = "b2mml"


@ledger_app.command("import")
def ledger_import(
    file: Annotated[str, typer.Argument(help="The document to apply ('-' reads standard input).")],
    fmt: Annotated[
        ImportFormat, typer.Option("--format", help="b2mml (B2MML V0700).")
    ] = ImportFormat.B2MML,
    user: UserOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Apply a B2MML SyncMaterialDefinition / ProcessMaterialDefinition (master data) or
    SyncMaterialLot / ProcessMaterialLot (lots announced by ERP), all or nothing, audited;
    prints the answer document (AcknowledgeMaterial... or ConfirmBOD).

    With `[b2mml] schema_dir` (or INVOPS_B2MML_SCHEMA_DIR) the document is validated
    against MESA's XSDs first."""
    from inventory_core.b2mml import B2mmlError, SchemaValidator, parse_inbound
    from inventory_core.b2mml.apply import Applied, apply_inbound
    from inventory_core.domain.model import Source

    del fmt  # one format so far
    try:
        body = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    loaded = load_config_or_exit(config) if config is not None else None
    folder = loaded.b2mml.schema_dir if loaded is not None else None
    folder = folder or os.environ.get("INVOPS_B2MML_SCHEMA_DIR")
    try:
        if folder:
            SchemaValidator(Path(folder)).validate(body)
        inbound = parse_inbound(body)
    except FileNotFoundError as exc:
        fail(str(exc))
    except B2mmlError as exc:
        fail(f"{file}: refused, nothing applied: {exc}")
    who = _user(user)

    async def apply(ledger: Ledger) -> Applied:
        try:
            return await apply_inbound(ledger, inbound, user=who, source=Source.CLI)
        except (B2mmlError, InventoryError) as exc:  # nothing of it was applied
            fail(f"{file}: refused, nothing applied: {exc}")

    applied = _with_ledger(url, config, apply)
    if applied.held:
        typer.echo(
            f"held for signatures, not applied yet: {', '.join(applied.held)} "
            "(see invops ledger pending)",
            err=True,
        )
    sys.stdout.buffer.write(applied.answer)


def _time_option(name: str, value: str | None) -> str | None:
    try:
        return format_timestamp(parse_timestamp(value)) if value else None
    except ValueError:
        fail(f"{name} {value!r} is not an ISO 8601 time (e.g. 2026-11-26T06:00:00Z)")


AUDIT_CSV_COLUMNS = (
    "cursor", "timestamp", "user", "action", "object_type", "object_id", "reason", "old", "new",
    "writer", "seq", "hash",
)  # fmt: skip


@audit_app.command("show")
def audit_show(
    since: Annotated[
        str | None, typer.Option("--since", help="From this time (ISO 8601, UTC if no zone).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Up to this time (ISO 8601, UTC if no zone).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's records.")] = None,
    object_: Annotated[
        str | None,
        typer.Option(
            "--object",
            metavar="TYPE:ID",
            help="Only this object's records, e.g. lot:GLY-0100, unit:TK-102, "
            "movement:<id>, material:GLYCOL (a lot's or unit's include the records of the "
            "movements booked to it).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many records.")
    ] = None,
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Who did what, when and why, old -> new: the audit trail for an inspector (EU GMP
    Annex 11 §9), oldest first. Reads only; `ledger verify` checks the hash chains."""
    from inventory_core.domain.audit import WITH_MOVEMENTS, audit_document, audited_object

    if as_json and as_csv:
        fail("use either --json or --csv, not both")
    since_text, until_text = _time_option("--since", since), _time_option("--until", until)
    object_type = object_id = None
    if object_ is not None:
        try:
            object_type, object_id = audited_object(object_)
        except ValueError as exc:
            fail(f"--object {exc}")

    def read(ledger: Ledger) -> Awaitable[list[tuple[int, Any]]]:
        return ledger.audit_records(
            object_type, object_id, None, user, limit, since_time=since_text,
            until_time=until_text, with_movements=object_type in WITH_MOVEMENTS,
        )  # fmt: skip

    records = _with_ledger(url, config, read, read_only=True)
    documents = [audit_document(cursor, record) for cursor, record in records]
    if as_json:
        _print_json({"records": documents})
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, AUDIT_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for cursor, record in records:
            writer.writerow(
                {**audit_document(cursor, record), "old": record.old, "new": record.new}
            )
    else:
        for _, record in records:
            typer.echo(_audit_line(record))
        if not records:
            typer.echo("no audit records match", err=True)


def _audit_line(record: Any) -> str:
    """`time  user  action  type:id  (reason)  old -> new`, one line, controls escaped."""
    what = f"{record.object_type}:{record.object_id}" if record.object_id else record.object_type
    change = f"{_short(record.old)} -> {_short(record.new)}" if record.old else _short(record.new)
    reason = f"  ({record.reason})" if record.reason else ""
    return escape_controls(
        f"{record.timestamp}  {record.user}  {record.action}  {what}{reason}  {change}"
    )


def _short(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@opcua_app.command("export-nodeset")
def opcua_export_nodeset(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (default: standard output)."),
    ] = None,
) -> None:
    """Export the ISA-95 type model as an OPC UA NodeSet2 XML file for integrators' tools."""
    from information_model import export_nodeset, render_nodeset

    if output is None:
        sys.stdout.buffer.write(render_nodeset())
        return
    try:
        export_nodeset(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {output}", err=True)


def main() -> None:
    """Console-script entry point: every failure ends as one line on stderr."""
    startup.loading()
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("invops: error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            # typer's usage errors (unknown option, bad value, missing argument)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            if message := exc.format_message():  # empty: the help was shown instead
                typer.echo(f"invops: error: {message}{hint}", err=True)
            sys.exit(int(exc.exit_code))
        if _debug:  # anything else is a bug, not a user error: one line unless --debug
            raise
        typer.echo(
            f"invops: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True
        )
        sys.exit(EXIT_USER_ERROR)
    finally:
        startup.exiting()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()


register_signing(
    ledger_app,
    with_ledger=_with_ledger,
    print_json=_print_json,
    load_config=load_config_or_exit,
    fail=fail,
    url_option=UrlOption,
    config_option=ConfigOption,
    json_option=JsonOption,
    timestamp=lambda value, name: str(_time_option(name, value)),
    who=_user,
)
