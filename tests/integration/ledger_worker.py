"""A ledger client run as its own OS process by the concurrency and crash tests.

usage: python ledger_worker.py URL WRITER_ID MODE COUNT
  MODE issue   -- COUNT concurrent 1 kg issues of lot SHARED from TK-101, then one line
                  of JSON: {"accepted": n, "rejected": n, "replayed_keys": {...}}
  MODE keys    -- post receipts with the shared keys k-0..k-(COUNT-1); JSON as above
  MODE stream  -- post receipts forever, printing "<key> <movement id>" after each ack
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal

from inventory_core import open_ledger
from inventory_core.domain.errors import InsufficientStock
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageUnitId,
)


def _request(kind: MovementKind, lot: str, key: str | None) -> PostingRequest:
    unit = StorageUnitId("TK-101")
    return PostingRequest(
        kind,
        MaterialId("ETHANOL-96"),
        LotId(lot),
        Decimal(1),
        "kg",
        from_unit=unit if kind is MovementKind.ISSUE else None,
        to_unit=unit if kind is MovementKind.RECEIPT else None,
        idempotency_key=key,
    )


async def main(url: str, writer: str, mode: str, count: int) -> None:
    async with open_ledger(url, writer_id=writer) as ledger:
        if mode == "stream":
            n = 0
            while True:
                key = f"{writer}-{n}"
                result = await ledger.post(_request(MovementKind.RECEIPT, "CRASH", key))
                sys.stdout.write(f"{key} {result.movement_id}\n")
                sys.stdout.flush()
                n += 1
        if mode == "issue":
            requests = [_request(MovementKind.ISSUE, "SHARED", None) for _ in range(count)]
        else:
            requests = [_request(MovementKind.RECEIPT, "KEYED", f"k-{i}") for i in range(count)]
        results = await asyncio.gather(*(ledger.post(r) for r in requests), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, InsufficientStock):
                raise r
        summary = {
            "accepted": sum(1 for r in results if not isinstance(r, BaseException)),
            "rejected": sum(1 for r in results if isinstance(r, InsufficientStock)),
            "ids": {
                f"k-{i}": r.movement_id
                for i, r in enumerate(results)
                if not isinstance(r, BaseException)
            },
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
