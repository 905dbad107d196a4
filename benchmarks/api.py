"""The HTTP API's cost: authenticated POST receipts/s and p99 with 16 concurrent clients,
GET balances/s, and SSE delivery latency from commit to client.

Prints JSON lines (SPEC section 7). The server (the real app on uvicorn, a real SQLite
ledger in WAL with synchronous=FULL) runs in this process; the clients run in a separate
process (16 threads, one kept-alive HTTP/1.1 connection each), so they do not share the
server's interpreter. The baseline is the same postings through the ledger API in this
process with 16 concurrent callers, into a ledger of its own: `ratio` = HTTP postings/s /
in-process postings/s is what the HTTP layer keeps of the ledger's rate (target >= 0.5),
the median of `--rounds` back-to-back pairs. Both ledgers' writers run as the service's
does, in a process of their own (`--writer thread`: in a thread of this process, the
library default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_ledger
from inventory_core.domain.api_tokens import ApiToken, hash_token
from inventory_core.domain.model import (
    Booking,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.users import Role
from invops.http_server import HttpServer

TOKEN = "invops_bench-token"
OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED)
UNITS = tuple(
    StorageUnit(StorageUnitId(f"BIN-{n:02d}"), "P", "A", StorageKind.BIN, Decimal(10**9), "kg",
                OIL.id, booking=Booking.MANUAL)
    for n in range(16)
)  # fmt: skip

# The client process: N threads, each with its own kept-alive connection, runs its share
# of the requests and prints the per-request latencies (ms) and the wall time as JSON.
CLIENT = r"""
import http.client, json, sys, threading, time
port, clients, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
mode, token = sys.argv[4], sys.argv[5]
latencies, lock = [], threading.Lock()
def work(index):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    mine = []
    for n in range(index, total, clients):
        if mode == "post":
            body = json.dumps({"kind": "receipt", "material": "OIL", "lot": f"H{n}", "quantity": 1,
                               "uom": "kg", "to_unit": f"BIN-{n % 16:02d}"})
            headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json",
                       "Idempotency-Key": f"h-{n}"}
            start = time.perf_counter(); conn.request("POST", "/api/v1/movements", body, headers)
        else:
            headers = {"Authorization": "Bearer " + token}
            path = f"/api/v1/balances?unit=BIN-{n % 16:02d}"
            start = time.perf_counter(); conn.request("GET", path, headers=headers)
        response = conn.getresponse(); response.read()
        mine.append((time.perf_counter() - start) * 1000)
        assert response.status in (200, 201), response.status
    with lock: latencies.extend(mine)
threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
began = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"wall_s": time.perf_counter() - began, "latencies_ms": latencies}))
"""

# The stream client: reads `count` events and prints the wall-clock time each arrived.
STREAM = r"""
import http.client, json, sys, time
port, count, since = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
headers = {"Authorization": "Bearer " + sys.argv[4]}
conn.request("GET", f"/api/v1/movements/stream?since={since}", headers=headers)
response = conn.getresponse()
print("ready", flush=True)
arrived = {}
while len(arrived) < count:
    line = response.readline().decode()
    if line.startswith("id: "):
        arrived[int(line[4:])] = time.time()
print(json.dumps(arrived), flush=True)
"""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))]


async def clients(port: int, count: int, total: int, mode: str) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, str(port), str(count), str(total), mode, TOKEN,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode == 0, "client process failed"
    result: dict[str, object] = json.loads(out)
    return result


async def in_process(ledger: Ledger, count: int, total: int) -> float:
    """Postings/s through the ledger API with `count` concurrent callers."""
    queue = list(range(total))

    async def caller() -> None:
        while queue:
            n = queue.pop()
            await ledger.post(
                PostingRequest(
                    MovementKind.RECEIPT,
                    OIL.id,
                    LotId(f"I{n}"),
                    Decimal(1),
                    "kg",
                    to_unit=StorageUnitId(f"BIN-{n % 16:02d}"),
                    idempotency_key=f"i-{n}",
                    user="bench",
                    source=Source.API,
                )
            )

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(count)))
    return total / (time.perf_counter() - began)


async def stream_latency(ledger: Ledger, port: int, events: int) -> list[float]:
    """ms from a movement's commit (its post returned) to its SSE event at the client."""
    since = await ledger.last_seq()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STREAM, str(port), str(events), str(since), TOKEN,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    await asyncio.sleep(0.5)
    committed: dict[int, float] = {}
    for n in range(events):
        result = await ledger.post(
            PostingRequest(
                MovementKind.RECEIPT,
                OIL.id,
                LotId(f"S{n}"),
                Decimal(1),
                "kg",
                to_unit=StorageUnitId("BIN-00"),
                user="bench",
                source=Source.API,
            )
        )
        done = time.time()
        committed[(await ledger.movement(result.movement_id)).seq] = done
        await asyncio.sleep(0.02)
    arrived = json.loads((await process.stdout.readline()).decode())
    await process.wait()
    return [(arrived[str(seq)] - at) * 1000 for seq, at in committed.items()]


@asynccontextmanager
async def bins_ledger(url: str, writer: str) -> AsyncIterator[Ledger]:
    """A fresh ledger at `url` holding the bins' master data, its writer a process of its
    own or a thread of this one (`writer`)."""
    own = writer == "process"
    async with open_ledger(url, writer_id="bench", migrate=True, writer_process=own) as ledger:
        await ledger.sync_master_data((OIL,), UNITS)
        yield ledger


@asynccontextmanager
async def api_server(ledger: Ledger) -> AsyncIterator[HttpServer]:
    """The real app on `ledger`, served on a free port, the bench token an operator's."""
    tokens = [ApiToken("bench", Role.OPERATOR, hash_token(TOKEN))]
    app = create_app(ledger, ApiAuth([], tokens, anonymous_read=False))
    async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
        yield server


async def main(args: argparse.Namespace) -> None:
    # The machine's speed drifts within a run: each round measures the baseline and then
    # HTTP back to back, each into an empty ledger of its own (both book the same
    # postings into the same number of lots); `ratio` is the median of the rounds' ratios.
    rates: list[float] = []
    baselines: list[float] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            async with bins_ledger(
                f"sqlite+aiosqlite:///{Path(tmp) / f'baseline-{n}.db'}", args.writer
            ) as b:
                baselines.append(await in_process(b, args.clients, args.postings))
            url = f"sqlite+aiosqlite:///{Path(tmp) / f'api-{n}.db'}"
            async with bins_ledger(url, args.writer) as ledger, api_server(ledger) as server:
                posted = await clients(server.port, args.clients, args.postings, "post")
                rates.append(args.postings / float(posted["wall_s"]))  # type: ignore[arg-type]
                latencies += posted["latencies_ms"]  # type: ignore[arg-type]
                if n == args.rounds - 1:  # reads and the stream from the last round's ledger
                    print(json.dumps(posting_line(args, rates, baselines, latencies)), flush=True)
                    await reads_and_stream(args, ledger, server)


def posting_line(
    args: argparse.Namespace, rates: list[float], baselines: list[float], latencies: list[float]
) -> dict[str, object]:
    ratios = [rate / baseline for rate, baseline in zip(rates, baselines, strict=True)]
    return {
        "bench": "api", "case": "post_receipts", "clients": args.clients, "writer": args.writer,
        "postings": args.postings, "rounds": args.rounds,
        "postings_per_s": round(statistics.median(rates), 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "baseline_postings_per_s": round(statistics.median(baselines), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
    }  # fmt: skip


async def reads_and_stream(args: argparse.Namespace, ledger: Ledger, server: HttpServer) -> None:
    """GET balances/s from the clients, then the stream's delivery latency."""
    read = await clients(server.port, args.clients, args.reads, "get")
    reads = read["latencies_ms"]
    assert isinstance(reads, list)
    print(json.dumps({
        "bench": "api", "case": "get_balances", "clients": args.clients,
        "requests": args.reads,
        "requests_per_s": round(args.reads / float(read["wall_s"]), 1),  # type: ignore[arg-type]
        "p99_ms": round(percentile(reads, 99), 2),
    }), flush=True)  # fmt: skip
    delays = await stream_latency(ledger, server.port, args.events)
    print(json.dumps({
        "bench": "api", "case": "sse_delivery", "events": args.events,
        "p50_ms": round(percentile(delays, 50), 2),
        "p99_ms": round(percentile(delays, 99), 2),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--postings", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="baseline/HTTP pairs (median)")
    parser.add_argument(
        "--writer", choices=("process", "thread"), default="process",
        help="the ledger writer: a process of its own (the service) or a thread",
    )  # fmt: skip
    asyncio.run(main(parser.parse_args()))
