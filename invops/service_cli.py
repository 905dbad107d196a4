"""`invops run` and `invops demo`: start the service (and, for the demo, the simulators).

The service and the simulators (asyncua, pymodbus, snap7, prometheus_client) are
imported by the commands that run them, not when the CLI starts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inventory_core.domain.errors import LeaseError, LedgerUnavailable
from invops import startup
from invops.cli_config import load_config_or_exit

if TYPE_CHECKING:
    from invops.config import InvopsConfig
    from invops.service import Endpoints

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "demo-plant.toml"
DEMO_USERS = ("viewer", "operator", "engineer", "admin")
# DEMO ONLY, like the demo users: examples/demo-plant.toml holds its hash.
DEMO_API_TOKEN = "invops_demo-operator-token"
DEMO_HOST = "127.0.0.1"
# The demo option that moves each simulated PLC.
DEMO_PLC_PORT_OPTIONS = {"PLC-MODBUS": "--modbus-port", "PLC-S7": "--s7-port"}


class DemoError(Exception):
    """Raised when the demo cannot start as asked; the message is the one line to print."""


def _run(coro: Coroutine[Any, Any, None]) -> None:
    from invops.http import HttpEndpointError
    from opcua_server import OpcuaServerError

    startup.loaded()
    try:
        asyncio.run(coro)
    except (
        LedgerUnavailable,
        LeaseError,
        OpcuaServerError,
        HttpEndpointError,
        OSError,
        DemoError,
    ) as exc:
        typer.echo(f"invops: error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        config: Annotated[Path, typer.Option("--config", "-c", help="The plant's TOML config.")],
    ) -> None:
        """Run the service against real PLCs until SIGINT/SIGTERM."""
        from invops.service import run_service

        loaded = load_config_or_exit(config)
        _run(run_service(loaded))

    @app.command("demo")
    def demo(
        data_dir: Annotated[
            Path,
            typer.Option(
                "--data-dir",
                help="Where the demo keeps its ledger, keys and endpoints.json (created).",
            ),
        ] = Path("var"),
        opcua_port: Annotated[
            int,
            typer.Option(
                "--opcua-port",
                min=0,
                max=65535,
                metavar="PORT",
                help="OPC UA server port on 127.0.0.1 (0 picks a free port).",
            ),
        ] = 4840,
        metrics_port: Annotated[
            int,
            typer.Option(
                "--metrics-port",
                min=0,
                max=65535,
                metavar="PORT",
                help="Prometheus /metrics and /healthz port on 127.0.0.1 (0 picks a free port).",
            ),
        ] = 9840,
        modbus_port: Annotated[
            int,
            typer.Option(
                "--modbus-port",
                min=0,
                max=65535,
                metavar="PORT",
                help="Simulated Modbus TCP PLC port on 127.0.0.1 (0 picks a free port).",
            ),
        ] = 5020,
        s7_port: Annotated[
            int,
            typer.Option(
                "--s7-port",
                min=0,
                max=65535,
                metavar="PORT",
                help="Simulated S7 PLC port on 127.0.0.1 (0 picks a free port).",
            ),
        ] = 1102,
        api_port: Annotated[
            int,
            typer.Option(
                "--api-port",
                min=0,
                max=65535,
                metavar="PORT",
                help="HTTP API (ERP, WMS, MES) port on 127.0.0.1 (0 picks a free port).",
            ),
        ] = 9841,
    ) -> None:
        """Simulators + service on the bundled demo plant, all on 127.0.0.1, until Ctrl+C.

        The chosen endpoints are printed and written to DATA_DIR/endpoints.json.
        """
        if not DEMO_CONFIG.exists():
            typer.echo(f"invops: error: demo config not found at {DEMO_CONFIG}", err=True)
            raise typer.Exit(1)
        config = load_config_or_exit(DEMO_CONFIG)
        data_dir.mkdir(parents=True, exist_ok=True)
        ledger = config.ledger.model_copy(
            update={
                "url": f"sqlite+aiosqlite:///{data_dir.resolve()}/invops.db",
                "migrate_on_start": True,
            }
        )
        config = config.model_copy(update={"ledger": ledger})
        ports = {"PLC-MODBUS": modbus_port, "PLC-S7": s7_port}
        demo = _demo(config, data_dir, ports, opcua_port, metrics_port, api_port)
        listeners = {"opcua_port": opcua_port, "metrics_port": metrics_port, "api_port": api_port}
        _run(_explain_demo_failure(demo, **listeners))


async def _explain_demo_failure(
    demo: Coroutine[Any, Any, None], *, opcua_port: int, metrics_port: int, api_port: int
) -> None:
    """A listener that cannot bind becomes a DemoError naming the option that moves it."""
    from invops.http import HttpEndpointError
    from invops.listen_errors import listen_errno, listen_failure
    from opcua_server import OpcuaServerError
    from simulators import ListenError, SimulatorError

    def remedy(option: str) -> str:
        return f"start the demo with {option} PORT (0 picks a free port)"

    try:
        await demo
    except ListenError as exc:
        option = DEMO_PLC_PORT_OPTIONS.get(exc.plc, "--modbus-port or --s7-port")
        what = f"the {exc.plc} simulator"
        raise DemoError(listen_failure(what, exc.host, exc.port, exc, remedy(option))) from exc
    except SimulatorError as exc:
        raise DemoError(f"the simulated plant cannot start: {exc}") from exc
    except HttpEndpointError as exc:  # the metrics endpoint's, or the API's (named "api")
        if str(exc).startswith("api:"):
            what, port, option = "the HTTP API", api_port, "--api-port"
        else:
            what, port, option = "the metrics endpoint", metrics_port, "--metrics-port"
        raise DemoError(listen_failure(what, DEMO_HOST, port, exc, remedy(option))) from exc
    except OpcuaServerError as exc:
        if listen_errno(exc) is None:
            raise
        what = "the OPC UA server"
        message = listen_failure(what, DEMO_HOST, opcua_port, exc, remedy("--opcua-port"))
        raise DemoError(message) from exc


async def _demo(
    config: InvopsConfig,
    data_dir: Path,
    plc_ports: dict[str, int],
    opcua_port: int,
    metrics_port: int,
    api_port: int,
) -> None:
    from invops.plant_description import plant_description
    from invops.service import run_service
    from simulators import PLANT_STATE_FILE, Simulation
    from simulators.erp import SimulatedErp

    # The simulated plant resumes where the last demo run left it (see simulators.plant_state).
    # Material arrives by truck only: each delivery announced by the simulated ERP.
    state = data_dir / PLANT_STATE_FILE
    plant = plant_description(config)
    async with Simulation(plant, ports=plc_ports, state_path=state, scheduled_receipts=True) as sim:

        def ready(started: Endpoints) -> None:
            endpoints = {
                "opcua": started.opcua,
                "metrics": f"http://127.0.0.1:{started.metrics_port}/metrics",
                "healthz": f"http://127.0.0.1:{started.metrics_port}/healthz",
                "modbus": f"127.0.0.1:{sim.ports['PLC-MODBUS']}",
                "s7": f"127.0.0.1:{sim.ports['PLC-S7']}",
                "ledger": config.ledger.url,
                "api": f"http://127.0.0.1:{started.api_port}/api/v1",
            }
            (data_dir / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")
            _print_welcome(endpoints)

        await run_service(
            config,
            plc_ports=sim.ports,
            opcua_endpoint=f"opc.tcp://127.0.0.1:{opcua_port}/invops",
            pki_dir=data_dir / "pki",
            buffer_path=data_dir / "buffer.db",
            metrics_port=metrics_port,
            api_port=api_port,
            ready=ready,
            extra_tasks=[("simulated-erp", lambda ledger: SimulatedErp(ledger, sim.model).run())],
        )


def _invops_command() -> str:
    """How to call this invops from the current directory: `.venv/bin/invops` after `make run`."""
    script = Path(sys.executable).with_name("invops")
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _print_welcome(endpoints: dict[str, str]) -> None:
    users = ", ".join(f"{u}/{u}" for u in DEMO_USERS)
    ledger = endpoints["ledger"]
    invops = _invops_command()
    typer.echo(
        f"""invops demo plant ACME/PLANT1 is running.

  OPC UA     {endpoints["opcua"]}   (security None allowed; users {users};
             anonymous may browse and read)
  Metrics    {endpoints["metrics"]}   health {endpoints["healthz"]}
  Modbus     {endpoints["modbus"]} (unit 1)   S7 {endpoints["s7"]} (rack 0, slot 1)
  Ledger     {ledger}
  HTTP API   {endpoints["api"]}   docs {endpoints["api"].removesuffix("/v1")}/docs
             (anonymous may read; demo operator token {DEMO_API_TOKEN})

Try next (in another shell):
  {invops} ledger history --url {ledger} --last 10
  {invops} ledger post receipt --url {ledger} --material GLYCOL --lot GLY-0001 \\
      --qty 500 --uom kg --to TK-102 --ref DN-4711 --user operator
      (an advice: a simulated truck delivers it within a minute and the gauge books it)
  {invops} ledger advices --url {ledger} --unit TK-102
  {invops} ledger reconcile --url {ledger}
  curl -s {endpoints["api"]}/balances?unit=TK-102
  Browse Objects/Inventory/PLANT1/TANKFARM/TK-101 in any OPC UA client.

Stop with Ctrl+C."""
    )
