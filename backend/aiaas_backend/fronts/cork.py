"""Writes gathered over one turn of the event loop and sent as one: a system call per turn, not per write.

Under load a front answers many callers in one turn of the loop (the primary's answers for a
whole batch arrive together), and uvicorn writes an answer's head and body separately: each
``transport.write`` was a ``send`` of its own, the largest single cost of a forwarded predict
in a py-spy profile. The same holds on ``predict.sock`` in both directions (a frame per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Gather:
    """``write`` keeps the bytes; they go to ``sink`` as one at the end of this loop turn (or on ``flush``)."""

    __slots__ = ("_loop", "_parts", "_sink")

    def __init__(self, sink: Callable[[bytes], Any]) -> None:
        self._sink = sink
        self._parts: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        if self._parts:
            parts, self._parts = self._parts, []
            self._sink(parts[0] if len(parts) == 1 else b"".join(parts))

    def drop(self) -> None:
        self._parts = []

    @property
    def pending(self) -> int:
        return sum(map(len, self._parts))


class CorkedTransport:
    """A transport whose writes in one loop turn leave as one ``send``; everything else is the real one's."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._gather = Gather(self._send)

    def _send(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._gather.write(bytes(data) if not isinstance(data, bytes) else data)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._gather.pending

    def write_eof(self) -> None:
        self._gather.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._gather.flush()
        self._transport.close()

    def abort(self) -> None:
        self._gather.drop()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, pause_reading, get_extra_info, ...
        return getattr(self._transport, name)


def corked_http(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ``base``, writing through a :class:`CorkedTransport`, and telling the
    app when its caller left: ``scope["aiaas.left"]`` is a set the app may put futures in; they are
    cancelled when the connection is lost (no task per request to watch for the disconnect)."""

    class Corked(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.aiaas_waiting: set[asyncio.Future[Any]] = set()
            super().connection_made(CorkedTransport(transport))  # type: ignore[arg-type]

        def on_message_begin(self) -> None:
            super().on_message_begin()
            scope = getattr(self, "scope", None)
            if isinstance(scope, dict):  # uvicorn's scope for this request (absent: the app watches itself)
                scope["aiaas.left"] = self.aiaas_waiting

        def connection_lost(self, exc: Exception | None) -> None:
            for future in self.aiaas_waiting:
                future.cancel()
            self.aiaas_waiting.clear()
            super().connection_lost(exc)

    Corked.__name__ = f"Corked{base.__name__}"
    return Corked


def uvicorn_http_class() -> type[asyncio.Protocol]:
    """The HTTP protocol uvicorn's ``http="auto"`` would use, corked."""
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    return corked_http(base)


__all__ = ["CorkedTransport", "Gather", "corked_http", "uvicorn_http_class"]
