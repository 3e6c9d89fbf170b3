"""A front's one connection to the primary's ``predict.sock``: many predicts at once, by id."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from . import wire

Reply = tuple[int, bytes]  # (kind, payload)


class PrimaryLink:
    """Sends WORK frames and resolves each request's future with the primary's reply.

    ``on_lost`` is called once when the primary closes the connection (it stopped): the
    front has nothing left to serve predicts with and stops too; the primary restarts it."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self, path: str) -> None:
        reader, self._writer = await asyncio.open_unix_connection(path)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()

    def submit(self, name: str, dep_id: str, key: str, is_tensor: bool, payload: bytes) -> asyncio.Future[Reply]:
        """Queue the work on the primary; cancelling the future (the caller left) drops it there."""
        assert self._writer is not None
        request_id = next(self._ids) & 0xFFFFFFFF
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        future.add_done_callback(lambda done: self._settled(request_id, done))
        self._writer.write(wire.work_frame(request_id, name, dep_id, key, is_tensor, payload))
        return future

    def tally(self, name: str, dep_id: str, status: int) -> None:
        """Count a predict the front answered itself in the primary's metrics."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(wire.tally_frame(name, dep_id, status))

    def _settled(self, request_id: int, future: asyncio.Future[Reply]) -> None:
        if (self._pending.pop(request_id, None) is not None and future.cancelled()
                and self._writer is not None and not self._writer.is_closing()):
            self._writer.write(wire.frame(request_id, wire.CANCEL))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (n,) = wire.LEN.unpack(await reader.readexactly(wire.LEN.size))
                body = await reader.readexactly(n)
                request_id, kind = wire.HEAD.unpack_from(body)
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result((kind, body[wire.HEAD.size:]))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        lost = ConnectionError("the primary server process stopped")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        self._pending.clear()
        self._on_lost()
