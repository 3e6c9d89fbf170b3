"""A front's one connection to the primary's ``predict.sock``: many predicts at once, by id."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from functools import partial

from . import wire
from .cork import Gather

Reply = tuple[int, bytes]  # (kind, payload)


class PrimaryLink(asyncio.Protocol):
    """Sends WORK frames and resolves each request's future with the primary's reply.

    The frames of one loop turn leave in one write, and every whole frame a read brings is
    answered in that read's callback: no task or await per frame on either side.

    ``on_lost`` is called once when the primary closes the connection (it stopped): the
    front has nothing left to serve predicts with and stops too; the primary restarts it."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._out: Gather | None = None
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._buffer = b""
        self._closed = False

    async def connect(self, path: str) -> None:
        await asyncio.get_running_loop().create_unix_connection(lambda: self, path)

    async def close(self) -> None:
        if self._out is not None:
            self._out.flush()
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._out = Gather(self._send)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def submit(self, name: str, dep_id: str, key: str, is_tensor: bool, payload: bytes) -> asyncio.Future[Reply]:
        """Queue the work on the primary; cancelling the future (the caller left) drops it there."""
        assert self._out is not None
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ConnectionError("the primary server process stopped"))
            return future
        request_id = next(self._ids) & 0xFFFFFFFF
        self._pending[request_id] = future
        future.add_done_callback(partial(self._settled, request_id))
        self._out.write(wire.work_frame(request_id, name, dep_id, key, is_tensor, payload))
        return future

    def tally(self, name: str, dep_id: str, status: int) -> None:
        """Count a predict the front answered itself in the primary's metrics."""
        if self._out is not None and not self._closed:
            self._out.write(wire.tally_frame(name, dep_id, status))

    def _settled(self, request_id: int, future: asyncio.Future[Reply]) -> None:
        if (future.cancelled() and not self._closed and self._out is not None
                and self._pending.pop(request_id, None) is not None):
            self._out.write(wire.frame(request_id, wire.CANCEL))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        frames, used = wire.whole_frames(buffer)
        pending = self._pending
        for request_id, kind, start, end in frames:
            future = pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result((kind, buffer[start:end]))
        self._buffer = buffer[used:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        lost = ConnectionError("the primary server process stopped")
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(lost)
        self._on_lost()
