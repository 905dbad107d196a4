"""`invops run` and `invops demo`: start the service (and, for the demo, the simulators)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from inventory_core.domain.errors import LeaseError, LedgerUnavailable
from invops.cli_config import load_config_or_exit
from invops.config import InvopsConfig
from invops.http import HttpEndpointError
from invops.service import Endpoints, run_service
from opcua_server import OpcuaServerError
from simulators import Simulation

log = logging.getLogger(__name__)
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "demo-plant.toml"
DEMO_USERS = ("viewer", "operator", "engineer", "admin")


def _run(coro: object) -> None:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except (LedgerUnavailable, LeaseError, OpcuaServerError, HttpEndpointError, OSError) as exc:
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
        loaded = load_config_or_exit(config)
        _run(run_service(loaded))

    @app.command("demo")
    def demo(
        data_dir: Annotated[
            Path, typer.Option("--data-dir", help="Where the demo keeps its ledger and keys.")
        ] = Path("var"),
        opcua_port: Annotated[int, typer.Option("--opcua-port", min=0, max=65535)] = 4840,
        metrics_port: Annotated[int, typer.Option("--metrics-port", min=0, max=65535)] = 9840,
        modbus_port: Annotated[int, typer.Option("--modbus-port", min=0, max=65535)] = 5020,
        s7_port: Annotated[int, typer.Option("--s7-port", min=0, max=65535)] = 1102,
    ) -> None:
        """Simulators + service on the bundled demo plant (0 picks a free port)."""
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
        _run(_demo(config, data_dir, ports, opcua_port, metrics_port))


async def _demo(
    config: InvopsConfig,
    data_dir: Path,
    plc_ports: dict[str, int],
    opcua_port: int,
    metrics_port: int,
) -> None:
    async with Simulation(config, ports=plc_ports) as sim:

        def ready(started: Endpoints) -> None:
            endpoints = {
                "opcua": started.opcua,
                "metrics": f"http://127.0.0.1:{started.metrics_port}/metrics",
                "healthz": f"http://127.0.0.1:{started.metrics_port}/healthz",
                "modbus": f"127.0.0.1:{sim.ports['PLC-MODBUS']}",
                "s7": f"127.0.0.1:{sim.ports['PLC-S7']}",
                "ledger": config.ledger.url,
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
            ready=ready,
        )


def _print_welcome(endpoints: dict[str, str]) -> None:
    users = ", ".join(f"{u}/{u}" for u in DEMO_USERS)
    ledger = endpoints["ledger"]
    typer.echo(
        f"""invops demo plant ACME/PLANT1 is running.

  OPC UA     {endpoints["opcua"]}   (security None allowed; users {users};
             anonymous may browse and read)
  Metrics    {endpoints["metrics"]}   health {endpoints["healthz"]}
  Modbus     {endpoints["modbus"]} (unit 1)   S7 {endpoints["s7"]} (rack 0, slot 1)
  Ledger     {ledger}

Try next (in another shell):
  .venv/bin/invops ledger history --url {ledger} --limit 10
  .venv/bin/invops ledger post receipt --url {ledger} --material GLYCOL --lot GLY-001 \\
      --qty 500 --uom kg --to TK-102 --user operator
  .venv/bin/invops ledger reconcile --url {ledger}
  Browse Objects/Inventory/PLANT1/TANKFARM/TK-101 in any OPC UA client.

Stop with Ctrl+C."""
    )
