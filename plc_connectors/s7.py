"""Siemens S7 link: planned `db_read`s over python-snap7's native asyncio client (REFERENCE 5).

snap7 3.x is pure Python and its `AsyncClient` talks asyncio streams, so no thread hop
is needed. Blocks are planned to fit one PDU (negotiated size - 18 header bytes), so
each block is one request. `read_multi_vars` is not used: the async client runs its
items one request at a time, which saves nothing over one `db_read` per block.
"""

from __future__ import annotations

import asyncio
import re
from types import TracebackType
from typing import Self

from snap7 import AsyncClient
from snap7.error import S7ConnectionError, S7Error, S7ProtocolError, S7TimeoutError

from plc_connectors.errors import PlcConnectError, PlcError, PlcProtocolError, PlcTimeout
from plc_connectors.model import PlcSettings
from plc_connectors.planning import (
    S7_MAX_BYTES,
    S7_MAX_GAP,
    BlockReader,
    ReadBlock,
    block_reader,
    plan_s7,
)

S7_READ_OVERHEAD = 18  # S7 header 12 + parameters 2 + data item header 4 (REFERENCE 5.1)
# snap7 reports a per-item return code only in the message of an S7ProtocolError:
# "Read operation failed: Object does not exist (0x0a)". The PLC answered, so these are
# configuration problems (DB missing, range outside the DB), not connection trouble.
_ITEM_ERROR = re.compile(r"^Read operation failed: .*\(0x([0-9a-fA-F]{2})\)$")


class S7Link:
    """One S7 CPU: connect (rack/slot from settings), read every tag per poll, close.

    `connect()` is a no-op while connected. Any failure other than an item error the PLC
    reported drops the connection (a timed-out or garbled exchange leaves the stream in
    an unknown state), so the next `connect()` starts clean.
    """

    def __init__(self, settings: PlcSettings) -> None:
        self.name = settings.name
        self._settings = settings
        self._max_gap = settings.max_gap if settings.max_gap is not None else S7_MAX_GAP
        self._max_bytes = S7_MAX_BYTES
        self._blocks: tuple[ReadBlock, ...] = ()
        self._reads: tuple[tuple[ReadBlock, BlockReader, str], ...] = ()
        self._plan(S7_MAX_BYTES)
        self._client: AsyncClient | None = None
        self._lock = asyncio.Lock()

    @property
    def reads_per_poll(self) -> int:
        """Requests one `read()` sends (planned for the PDU negotiated at the last connect)."""
        return len(self._blocks)

    @property
    def blocks(self) -> tuple[ReadBlock, ...]:
        return self._blocks

    @property
    def pdu_length(self) -> int | None:
        return self._client.get_pdu_length() if self._client is not None else None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.get_connected()

    async def connect(self) -> None:
        """Open the ISO-on-TCP connection and negotiate the PDU (no-op when already up)."""
        async with self._lock:
            if self.connected:
                return
            self._abandon()
            s = self._settings
            client = AsyncClient()
            self._client = client
            try:
                async with asyncio.timeout(s.timeout_s):
                    await client.connect(s.host, s.rack, s.slot, tcp_port=s.port)
            except TimeoutError as exc:
                self._abandon()
                raise PlcConnectError(f"{self._where()}: connect timed out") from exc
            except (S7Error, OSError) as exc:
                self._abandon()
                raise PlcConnectError(f"{self._where()}: connect failed: {exc}") from exc
            except BaseException:
                self._abandon()
                raise
            max_bytes = client.get_pdu_length() - S7_READ_OVERHEAD
            if max_bytes != self._max_bytes:
                self._plan(max_bytes)  # TagConfigError if a tag cannot fit
                self._max_bytes = max_bytes

    async def read(self) -> dict[str, float | bool]:
        """Read every planned block once; tag name -> engineering value."""
        async with self._lock:
            values: dict[str, float | bool] = {}  # a fresh dict per read, filled by every block
            for block, read_into, where in self._reads:
                await self._read_block(block, read_into, where, values)
            return values

    async def close(self) -> None:
        """Disconnect politely (COTP disconnect request), abandoning the socket if that hangs."""
        async with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            try:
                async with asyncio.timeout(self._settings.timeout_s):
                    await client.disconnect()
            except (TimeoutError, S7Error, OSError):
                _abort(client)
            except BaseException:
                _abort(client)
                raise

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------

    def _plan(self, max_bytes: int) -> None:
        """Blocks for a PDU of `max_bytes` payload, each with its compiled reader and its
        name in errors."""
        blocks = plan_s7(self._settings.tags, max_bytes=max_bytes, max_gap=self._max_gap)
        self._blocks = tuple(blocks)
        self._reads = tuple(
            (
                block,
                block_reader(block),
                f"{self.name} read DB{_db(block)}.DBB{block.start}+{block.count}",
            )
            for block in blocks
        )

    async def _read_block(
        self, block: ReadBlock, read_into: BlockReader, where: str, values: dict[str, float | bool]
    ) -> None:
        db = _db(block)
        client = self._client
        if client is None or not client.get_connected():
            self._abandon()
            raise PlcConnectError(f"{where}: not connected")
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                data = await client.db_read(db, block.start, block.count)
            read_into(data, values)  # a bytearray: unpacked in place, no copy
        except TimeoutError as exc:
            self._abandon()
            raise PlcTimeout(f"{where}: no answer within {self._settings.timeout_s} s") from exc
        except S7TimeoutError as exc:
            self._abandon()
            raise PlcTimeout(f"{where}: {exc}") from exc
        except (S7ConnectionError, OSError) as exc:
            self._abandon()
            raise PlcConnectError(f"{where}: connection lost: {exc}") from exc
        except S7ProtocolError as exc:
            if _ITEM_ERROR.match(str(exc)):
                raise PlcProtocolError(f"{where}: PLC refused the read: {exc}") from exc
            self._abandon()
            raise PlcProtocolError(f"{where}: bad response: {exc}", retryable=True) from exc
        except PlcError:
            self._abandon()  # short data from the decoder: the exchange is suspect
            raise
        except (S7Error, RuntimeError, ValueError) as exc:
            self._abandon()
            raise PlcProtocolError(f"{where}: {exc}", retryable=True) from exc
        except BaseException:
            self._abandon()  # cancelled mid-exchange: the stream may hold a late reply
            raise

    def _abandon(self) -> None:
        """Forget the connection without a goodbye (it is suspect or already gone)."""
        client, self._client = self._client, None
        if client is not None:
            _abort(client)

    def _where(self) -> str:
        return f"{self.name} ({self._settings.host}:{self._settings.port})"


def _db(block: ReadBlock) -> int:
    return block.db if block.db is not None else 0


def _abort(client: AsyncClient) -> None:
    """Close the socket at once, without the COTP disconnect handshake. snap7's
    `disconnect()` is a coroutine that writes and drains, which can hang on a dead peer
    and cannot run from synchronous cleanup; the stream writer is its only handle."""
    connection = client.connection
    writer = getattr(connection, "_writer", None) if connection is not None else None
    if writer is not None:
        writer.transport.abort()
    if connection is not None:
        connection.connected = False
    client.connection = None
    client.connected = False
