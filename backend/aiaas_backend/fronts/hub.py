"""The primary's side of the fronts: predicts they validated, queued on the primary's routers.

Each front keeps one connection to ``predict.sock``; its requests arrive as WORK frames
(:mod:`.wire`) and go to the same ``Router.submit`` the primary's own predicts use, so
batching, the queue bound (429), the stats, the drift sample, the Prometheus counters and
rolling updates see every request, whichever process took its HTTP connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from functools import partial
from typing import Any

from aiaas_sdk import tensor_codec

from ..errors import ApiError
from ..fast_predict import error_answer
from ..ratelimit import refusal
from ..routes.predict import overloaded, ready_runtime, serving_errors
from ..serving.router import Overloaded
from . import wire
from .cork import Gather

log = logging.getLogger("aiaas.fronts")

Pending = dict[int, "asyncio.Future[Any]"]


class Hub:
    """Serves the fronts' WORK, CANCEL and TALLY frames on the primary's event loop."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self._server: asyncio.AbstractServer | None = None
        self._links: set[_FrontLink] = set()

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _FrontLink(self), sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()

    def _frame(self, link: _FrontLink, request_id: int, kind: int, rest: memoryview) -> None:
        if kind == wire.WORK:
            self._work(request_id, wire.read_work(rest), link.pending, link)
        elif kind == wire.CANCEL:
            future = link.pending.pop(request_id, None)
            if future is not None:
                future.cancel()
        elif kind == wire.TALLY:
            self.state.metrics.predict_done(*wire.read_tally(rest))

    def _work(self, request_id: int, work: wire.Work, pending: Pending, writer: _FrontLink) -> None:
        state, name, dep_id = self.state, work.name, work.dep_id
        buckets = state.rate_buckets
        # The rate limit runs before anything else, as the primary's middleware does (and is not
        # a predict outcome in the metrics there either).
        if work.key and buckets is not None and (wait := buckets.take(work.key)) > 0:
            headers, body = refusal(buckets, wait)
            writer.write(wire.error_frame(request_id, 429, body, {k.decode(): v.decode() for k, v in headers}))
            return
        timeout_s = 0.0
        try:
            runtime = ready_runtime(state.serving, name, dep_id)
            timeout_s = runtime.config.timeout_s
            array, items = None, None
            if work.is_tensor:
                array = tensor_codec.decode(bytes(work.payload))  # checked by the front already
                state.monitor.sample(dep_id, array)
            else:
                items = json.loads(bytes(work.payload))
            future = runtime.router.submit(array, state.metrics.latency_observer(name, dep_id), items)
        except Overloaded as exc:  # submit's one refusal; serving_errors' context manager cost more per request
            self._error(writer, request_id, name, dep_id, overloaded(exc))
            return
        except ApiError as exc:
            self._error(writer, request_id, name, dep_id, exc)
            return
        except Exception:
            log.exception("a forwarded predict for %s failed", name)
            state.metrics.predict_done(name, dep_id, 500)
            writer.write(wire.frame(request_id, wire.FAILED))
            return
        pending[request_id] = future
        future.add_done_callback(partial(self._done, request_id, name, dep_id, timeout_s, pending, writer,
                                         work.is_tensor))

    def _done(self, request_id: int, name: str, dep_id: str, timeout_s: float, pending: Pending,
              writer: _FrontLink, is_tensor: bool, future: asyncio.Future[Any]) -> None:
        pending.pop(request_id, None)
        metrics = self.state.metrics
        if future.cancelled():  # the caller left (CANCEL) or the front went away
            metrics.predict_done(name, dep_id, 499)
            return
        if writer.is_closing():
            return
        exc = future.exception()
        if exc is None:
            output = future.result()
            if is_tensor:
                writer.write(wire.frame(request_id, wire.TENSOR, tensor_codec.encode(output)))
            else:
                writer.write(wire.frame(request_id, wire.ITEMS, json.dumps(output).encode()))
            metrics.predict_done(name, dep_id, 200)
            return
        try:
            with serving_errors(timeout_s):
                raise exc
        except ApiError as api:
            self._error(writer, request_id, name, dep_id, api)
        except Exception:
            log.error("a forwarded predict for %s failed", name, exc_info=exc)
            metrics.predict_done(name, dep_id, 500)
            writer.write(wire.frame(request_id, wire.FAILED))

    def _error(self, writer: _FrontLink, request_id: int, name: str, dep_id: str, exc: ApiError) -> None:
        self.state.metrics.predict_done(name, dep_id, exc.status_code)
        body, headers = error_answer(exc)
        writer.write(wire.error_frame(request_id, exc.status_code, body,
                                      {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}))


class _FrontLink(asyncio.Protocol):
    """One front's connection: whole frames handled as each read brings them, the answers of one
    loop turn (a batch's) sent back in one write."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.pending: Pending = {}
        self._transport: asyncio.Transport | None = None
        self._out: Gather | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._out = Gather(self._send)
        self.hub._links.add(self)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def write(self, data: bytes) -> None:
        if self._out is not None:
            self._out.write(data)

    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            if self._out is not None:
                self._out.flush()
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        # A frame that arrived whole is read in place (its payload a view of ``data``, not a copy).
        buffer = self._buffer + data if self._buffer else data
        frames, used = wire.whole_frames(buffer)
        view = memoryview(buffer)
        for request_id, kind, start, end in frames:
            self.hub._frame(self, request_id, kind, view[start:end])
        self._buffer = buffer[used:]

    def connection_lost(self, exc: Exception | None) -> None:
        # The front stopped: its callers' connections went with it.
        self.hub._links.discard(self)
        pending, self.pending = self.pending, {}
        for future in pending.values():
            future.cancel()


__all__ = ["Hub"]
