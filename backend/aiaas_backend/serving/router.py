"""One deployment's front: a bounded queue, dynamic batching, and its replicas.

Runs on the API server's event loop. Requests (each itself a batch of rows)
are queued; a batcher takes up to ``max_batch_size`` rows, waiting at most
``max_wait_ms`` after the first, and hands the batch to a free replica. If a
batch fails because of one request's inputs, its requests are retried one by
one, so a bad request never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from aiaas_sdk import tensor_codec

from .frames import LEN, OK, items_request

log = logging.getLogger("aiaas.serving")


class Overloaded(Exception):
    """The queue is full: the caller should retry after a pause (429)."""


class ReplicaLost(Exception):
    """The replica died while holding this request (503; safe to retry)."""


class InputRejected(ValueError):
    """The model refused these inputs (400)."""


class ItemsRejected(InputRejected):
    """Some JSON items failed in the module's hooks or model (400); ``errors`` holds (index, message)."""

    def __init__(self, errors: list[tuple[int, str]], total: int) -> None:
        shown = "; ".join(f"item {i}: {message}" for i, message in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"{len(errors)} of {total} items failed: {shown}{more}")
        self.errors = errors


@dataclass
class _Item:
    """One request's work: tensor rows, JSON values (``values``), or a stream (``stream``, alone on a replica)."""

    array: np.ndarray | None
    future: asyncio.Future[Any]
    enqueued: float
    values: list[Any] | None = None
    stream: bytes | None = None

    @property
    def rows(self) -> int:
        if self.values is not None:
            return len(self.values)
        return 1 if self.array is None else int(self.array.shape[0])

    @property
    def kind(self) -> str:
        return "stream" if self.stream is not None else "items" if self.values is not None else "tensor"


@dataclass
class Replica:
    """A connection to one replica process; ``spawn`` makes the process and returns its socket."""

    name: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stop: Callable[[], None]
    alive: bool = True
    busy: bool = False

    async def call(self, frame: bytes) -> bytes:
        if len(frame) < 65536:
            self.writer.write(LEN.pack(len(frame)) + frame)  # one send
        else:  # a batch of images is megabytes: not worth a copy to save a send
            self.writer.write(LEN.pack(len(frame)))
            self.writer.write(frame)
        await self.writer.drain()
        (n,) = LEN.unpack(await self.reader.readexactly(LEN.size))
        return await self.reader.readexactly(n)


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    rejected: int = 0
    dropped: int = 0
    batches: int = 0
    batch_rows: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    # When each of those requests finished (perf_counter): the alerts' sliding window.
    finished: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    batch_sizes: dict[int, int] = field(default_factory=dict)
    streams: int = 0
    stream_pieces: int = 0
    streams_cancelled: int = 0
    first_piece_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    pieces_per_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def percentile(self, q: float, values: deque[float] | None = None) -> float | None:
        values = self.latencies_ms if values is None else values
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def recent_latencies(self, seconds: float) -> np.ndarray:
        """Latencies (ms) of the requests that finished in the last ``seconds`` (newest 10,000 at most).

        ``finished`` grows in completion order, so the window is a suffix found by bisection;
        the deques convert to arrays in C (a Python loop over 10,000 took milliseconds of the loop).
        """
        done = np.fromiter(self.finished, dtype=np.float64, count=len(self.finished))
        start = int(np.searchsorted(done, time.perf_counter() - seconds, side="left"))
        return np.fromiter(self.latencies_ms, dtype=np.float64, count=len(self.latencies_ms))[start:]


class Router:
    def __init__(self, *, max_batch_size: int, max_wait_ms: float, max_queue: int, timeout_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.idle: asyncio.Queue[Replica] = asyncio.Queue()
        self.replicas: list[Replica] = []
        self.stats = Stats()
        self._held: _Item | None = None
        self._last_requests = 0  # requests in the batch formed last
        self._batcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.on_replica_lost: Callable[[Replica], Awaitable[None]] | None = None

    # -- replicas -------------------------------------------------------------
    def add_replica(self, replica: Replica) -> None:
        self.replicas.append(replica)
        self.idle.put_nowait(replica)
        if self._batcher is None:
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())

    async def remove_replica(self, replica: Replica) -> None:
        """Take a replica out once it is idle: its batch in flight finishes first."""
        replica.alive = False
        if replica in self.replicas:
            self.replicas.remove(replica)
        while replica.busy:
            await asyncio.sleep(0.005)
        replica.stop()

    @property
    def ready_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.alive)

    # -- requests -------------------------------------------------------------
    def enqueue(self, array: np.ndarray | None, values: list[Any] | None = None,
                stream: bytes | None = None) -> asyncio.Future[Any]:
        """Queue one request's work (429 when the queue is full); streams queue like requests."""
        if self.queue.qsize() >= self.max_queue:
            self.stats.rejected += 1
            raise Overloaded(f"the deployment's queue is full ({self.max_queue} requests); retry shortly")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Item(array, future, time.perf_counter(), values, stream))
        self.stats.requests += 1
        return future

    def submit(self, array: np.ndarray | None, observe: Callable[[float], None] | None = None,
               values: list[Any] | None = None) -> asyncio.Future[Any]:
        """Queue a request (tensor rows, or JSON ``values`` for the module's hooks); its future holds
        the answer, fails with ``TimeoutError`` after ``timeout_s``, and cancelling it (the caller
        left) drops the work unless a replica already has it. ``observe`` gets the latency in seconds.

        One timer and one callback per request, no task: this is every predict's path."""
        start = time.perf_counter()
        future = self.enqueue(array, values)
        timer = asyncio.get_running_loop().call_later(self.timeout_s, _expire, future)
        future.add_done_callback(partial(self._settled, start, timer, observe))
        return future

    def _settled(self, start: float, timer: asyncio.TimerHandle, observe: Callable[[float], None] | None,
                 future: asyncio.Future[Any]) -> None:
        timer.cancel()
        if future.cancelled():
            self.stats.dropped += 1
            return
        if future.exception() is not None:
            self.stats.errors += 1
            return
        done = time.perf_counter()
        elapsed = done - start
        self.stats.latencies_ms.append(1000 * elapsed)
        self.stats.finished.append(done)
        if observe is not None:  # the same figure as dep.stats() percentiles, as a Prometheus histogram
            observe(elapsed)

    async def _next_item(self, timeout: float | None) -> _Item | None:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if not self.queue.empty():
            # Under load the queue is rarely empty: wait_for would wrap each get in a task of its own.
            return self.queue.get_nowait()
        if timeout is None:
            return await self.queue.get()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout=max(timeout, 0))
        except TimeoutError:
            return None

    async def _batch_loop(self) -> None:
        while True:
            first = await self._next_item(None)
            if first is None or first.future.done():
                continue
            batch, rows = [first], first.rows if first.kind != "stream" else self.max_batch_size
            # Wait for company only under load: alone, with a replica idle, go at once. "Alone"
            # also means the last batch was a single request: under a steady load every batch's
            # callers come back together, the first of them finds the replica idle, and a
            # compute-bound model would then run a batch of one before each full one.
            idle_now = self.idle.qsize() > 0 and not any(r.busy for r in self.replicas)
            alone = idle_now and self.queue.empty() and self._held is None and self._last_requests <= 1
            wait = 0.0 if alone else self.max_wait
            deadline = time.perf_counter() + wait
            while rows < self.max_batch_size:
                item = await self._next_item(deadline - time.perf_counter())
                if item is None:
                    break
                if item.future.done():
                    continue
                if item.kind != first.kind or first.kind == "stream" or rows + item.rows > self.max_batch_size:
                    self._held = item  # starts the next batch
                    break
                batch.append(item)
                rows += item.rows
            self._last_requests = len(batch)
            replica = await self.idle.get()
            while not replica.alive:  # retired while idle
                replica = await self.idle.get()
            # Busy from here, before its task starts: remove_replica must not stop it under this batch.
            replica.busy = True
            task = asyncio.get_running_loop().create_task(self._run(replica, batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run(self, replica: Replica, batch: list[_Item]) -> None:
        batch = [item for item in batch if not item.future.done()]
        replica.busy = True
        try:
            if batch and batch[0].stream is not None:
                from .stream import lend

                await lend(self, replica, batch[0])  # the replica is the stream's until it ends
            elif batch:
                await self._run_batch(replica, batch)
        except Exception as exc:  # whatever went wrong, no caller may wait out its timeout for it
            log.exception("batch on replica %s failed", replica.name)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ReplicaLost(f"the replica could not run this request ({exc}); retry"))
        finally:
            replica.busy = False
            if replica.alive:
                self.idle.put_nowait(replica)

    async def lost(self, replica: Replica, exc: BaseException, batch: list[_Item]) -> None:
        replica.alive = False
        log.warning("replica %s was lost: %s", replica.name, exc)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(ReplicaLost("the replica serving this request stopped; retry"))
        if self.on_replica_lost is not None:
            await self.on_replica_lost(replica)

    async def _run_batch(self, replica: Replica, batch: list[_Item]) -> None:
        arrays = [item.array for item in batch if item.array is not None]
        try:
            if batch[0].values is not None:
                reply = await replica.call(items_request([v for item in batch for v in item.values or ()]))
            else:
                joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
                reply = await replica.call(tensor_codec.encode(joined))
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            await self.lost(replica, exc, batch)
            return
        self.stats.batches += 1
        size = sum(item.rows for item in batch)
        self.stats.batch_rows += size
        self.stats.batch_sizes[size] = self.stats.batch_sizes.get(size, 0) + 1
        if reply[:1] == OK and batch[0].values is not None:
            _answer_items(batch, json.loads(reply[1:]))
            return
        if reply[:1] == OK:
            output = tensor_codec.decode(reply[1:])
            edges = np.cumsum([a.shape[0] for a in arrays])[:-1]
            for item, part in zip(batch, np.split(output, edges)):
                if not item.future.done():
                    item.future.set_result(part)
            return
        error = json.loads(reply[1:])
        if len(batch) > 1 and error["kind"] == "input":
            # Find the culprit: each request alone, so good neighbours still succeed.
            for item in batch:
                await self._run_batch(replica, [item])
            return
        exc_type = InputRejected if error["kind"] == "input" else RuntimeError
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc_type(error["error"]))

    async def close(self) -> None:
        """Stop batching, retire every replica and fail what is still queued."""
        if self._batcher is not None:
            self._batcher.cancel()
        for task in list(self._inflight):
            task.cancel()
        for replica in list(self.replicas):
            await self.remove_replica(replica)
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(ReplicaLost("the deployment was stopped"))


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():  # the batcher skips it if still queued; a replica's late answer is ignored
        future.set_exception(TimeoutError())


def _answer_items(batch: list[_Item], results: list[dict[str, Any]]) -> None:
    """Each request gets its own items' answers, or a 400 naming its failed items by index."""
    start = 0
    for item in batch:
        part, start = results[start:start + item.rows], start + item.rows
        if item.future.done():
            continue
        errors = [(i, r["error"]) for i, r in enumerate(part) if "error" in r]
        if errors:
            item.future.set_exception(ItemsRejected(errors, len(part)))
        else:
            item.future.set_result([r["ok"] for r in part])


__all__ = ["InputRejected", "ItemsRejected", "Overloaded", "Replica", "ReplicaLost", "Router", "Stats"]
