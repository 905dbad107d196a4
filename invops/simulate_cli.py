"""`invops simulate`: the PLC simulators alone, serving every PLC the config names.

Wired into the main app by `register(app)`. Prints one line per served PLC on
stdout (`NAME  PROTOCOL  HOST:PORT  unit_id=N` or `rack=R slot=S`) and runs until
SIGINT/SIGTERM, then closes every listener and connection and exits 0. Every PLC
is served on 127.0.0.1 (or `--host`), not on the host its config entry names; a
note on stderr lists the PLCs served elsewhere than their config says.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from invops import startup
from invops.cli_config import load_config_or_exit

if TYPE_CHECKING:  # the simulators (pymodbus, snap7) load when the command runs
    from invops.config import InvopsConfig
    from simulators import Faults, PlantDescription, PlantModel

__all__ = ["register", "simulate"]

EXIT_USER_ERROR = 1
HOST = "127.0.0.1"


def simulate(
    config: Annotated[
        Path, typer.Option("--config", help="The plant's TOML config (serves each PLC it lists).")
    ],
    port: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            metavar="PLC=PORT",
            help="Serve a PLC on another port than its config says (0: any free port). Repeatable.",
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            metavar="SPEC",
            help=(
                "Inject a fault from the start, e.g. PLC-S7:refuse, PLC-MODBUS:delay=0.5, "
                "PLC-MODBUS:exception=2, PLC-MODBUS:freeze, TK-101.level:spike=20, "
                "TK-101.totalizer:jump=4294967000. Repeatable."
            ),
        ),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            metavar="SPEC",
            help=(
                "Schedule a truck: UNIT:delivery=AMOUNT[UOM][@START_S][/DURATION_S] or "
                "UNIT:shipment=..., e.g. TK-102:delivery=5000kg@10/60 (AMOUNT in the unit's "
                "simulated uom when UOM is left out: L for a level-gauged tank, kg else). "
                "It starts once the unit is idle. Repeatable."
            ),
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed the plant's randomness (repeatable runs).")
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address every simulated PLC listens on. The PLC hosts of the config "
            "(e.g. 10.20.1.11) are not used: a service polling the simulators must be "
            "pointed at this address.",
        ),
    ] = HOST,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            metavar="FILE",
            help="Resume the plant from FILE if it exists, and keep its state there "
            "(saved every second and on exit), as `invops demo` does.",
        ),
    ] = None,
) -> None:
    """Run the Modbus TCP and S7 PLC simulators of a config until Ctrl+C / SIGTERM.

    Every PLC is served on 127.0.0.1 (or --host), whatever host the config gives it,
    on its configured port (or --port PLC=PORT; ports below 1024, the Modbus and S7
    defaults 502 and 102, need root).
    """
    from invops.plant_description import plant_description
    from simulators import (
        FaultError,
        Faults,
        PlantModel,
        SimulatorError,
        check_fault_targets,
        parse_event,
        parse_fault,
    )

    plant = load_config_or_exit(config)
    description = plant_description(plant)
    ports = _parse_ports(port or [], plant)
    faults = Faults()
    try:
        for spec in fault or []:
            faults.apply(parse_fault(spec))
        check_fault_targets(description, faults)
    except FaultError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
    model = PlantModel(description, seed=seed)
    try:
        for spec in event or []:
            model.schedule(parse_event(spec))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--event") from None
    startup.loaded()
    try:
        asyncio.run(_serve(plant, description, ports, faults, model, host, state))
    except (SimulatorError, OSError) as exc:
        typer.echo(f"invops: error: {_failure(exc)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _failure(exc: Exception) -> str:
    """The one line for simulators that cannot run: for a port, why and how to move it."""
    from invops.listen_errors import listen_errno, listen_failure
    from simulators import ListenError

    if not isinstance(exc, ListenError):
        return str(exc)
    if listen_errno(exc) == errno.EADDRNOTAVAIL:
        remedy = f"serve on an address of this machine with --host (default {HOST})"
    else:
        remedy = f"serve it on another port with --port {exc.plc}=PORT (0 picks a free port)"
    return listen_failure(exc.plc, exc.host, exc.port, exc, remedy)


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to `app`."""
    app.command("simulate")(simulate)


def _parse_ports(options: list[str], plant: InvopsConfig) -> dict[str, int]:
    names = {plc.name for plc in plant.plcs}
    ports: dict[str, int] = {}
    for option in options:
        name, equals, number = option.partition("=")
        if not equals or not number.strip().isdigit():
            raise typer.BadParameter(f"expected PLC=PORT (got {option!r})", param_hint="--port")
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise typer.BadParameter(
                f"unknown PLC {name!r} (the config has: {known})", param_hint="--port"
            )
        value = int(number)
        if value > 65535:
            raise typer.BadParameter(f"port {value} is out of range (0-65535)", param_hint="--port")
        ports[name] = value
    return ports


async def _serve(
    plant: InvopsConfig,
    description: PlantDescription,
    ports: dict[str, int],
    faults: Faults,
    model: PlantModel,
    host: str,
    state: Path | None = None,
) -> None:
    """Run until SIGINT/SIGTERM; a signal ends the run normally (no exception)."""
    from simulators import run_simulators

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        main.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        loop.add_signal_handler(number, stop)
    try:
        await run_simulators(
            description,
            ports=ports,
            faults=faults,
            model=model,
            ready=lambda bound: _announce(plant, bound, host),
            host=host,
            state_path=state,
        )
    except asyncio.CancelledError:
        if not stopped:
            raise
        main.uncancel()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


def _announce(plant: InvopsConfig, bound: dict[str, int], host: str) -> None:
    from plc_connectors import PlcProtocol

    width = max((len(plc.name) for plc in plant.plcs), default=0)
    moved = []
    for plc in plant.plcs:
        if plc.protocol is PlcProtocol.MODBUS:
            detail = f"unit_id={plc.unit_id}"
        else:
            detail = f"rack={plc.rack} slot={plc.slot}"
        endpoint = f"{host}:{bound[plc.name]}"
        typer.echo(f"{plc.name:<{width}}  {plc.protocol.value:<6}  {endpoint:<15}  {detail}")
        configured = f"{plc.host}:{plc.effective_port}"
        if configured != endpoint:
            moved.append(f"{plc.name} {configured}")
    sys.stdout.flush()
    if moved:
        typer.echo(
            f"note: served on the addresses above, not where the config has them "
            f"({', '.join(moved)}): a service polling these simulators needs those "
            "[[plcs]] host and port values changed",
            err=True,
        )
    typer.echo("simulating; stop with Ctrl+C or SIGTERM", err=True)
