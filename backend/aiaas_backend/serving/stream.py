"""Streams through a deployment's router: queued like requests, then a replica lent to one caller.

A stream is a work item in the deployment's queue (so the queue bound, 429 and
the deployment timeout apply to it as to a predict request). When the batcher
reaches it, the replica is lent to the caller (:func:`lend`), who speaks the
stream frames (:mod:`.frames`) to it until END. A caller that goes away asks
the replica to stop (CANCEL) and the replica returns to the pool once it has
answered; the generation stops within one step.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .frames import CANCEL, END, ERROR, LEN, PIECE, stream_request
from .router import InputRejected, Replica, ReplicaLost, Router


class NotGenerative(InputRejected):
    """The deployment's model has no generator method to stream from (400)."""


@dataclass
class Lease:
    replica: Replica
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def lend(router: Router, replica: Replica, item: Any) -> None:
    """Give ``replica`` to the stream ``item`` and wait until the stream hands it back."""
    lease = Lease(replica)
    item.future.set_result(lease)
    await lease.done.wait()


async def _read(replica: Replica) -> bytes:
    (n,) = LEN.unpack(await replica.reader.readexactly(LEN.size))
    return await replica.reader.readexactly(n)


@dataclass
class Stream:
    """One open stream: ``pieces()`` yields text; ``finish_reason`` is set once it ends."""

    router: Router
    lease: Lease
    first: str
    started: float
    first_at: float
    finish_reason: str | None = None
    pieces_sent: int = 1

    async def pieces(self) -> AsyncIterator[str]:
        replica, last = self.lease.replica, self.first_at
        if self.finish_reason is not None:  # ended before its first piece
            return
        try:
            yield self.first
            while True:
                reply = await asyncio.wait_for(_read(replica), timeout=self.router.timeout_s)
                if reply[:1] == PIECE:
                    self.pieces_sent += 1
                    last = time.perf_counter()
                    yield reply[1:].decode()
                    continue
                if reply[:1] == END:
                    self.finish_reason = json.loads(reply[1:])["finish_reason"]
                else:  # the model failed mid-stream
                    self.finish_reason = "error"
                    raise RuntimeError(json.loads(reply[1:])["error"])
                break
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            await self.router.lost(replica, exc, [])
            self.lease.done.set()
            raise ReplicaLost("the replica serving this stream stopped; retry") from exc
        finally:
            if self.finish_reason is None and replica.alive:
                # The caller left (or timed out): stop the generation, then give the replica back.
                self.router.stats.streams_cancelled += 1
                asyncio.get_running_loop().create_task(_cancel(self.router, self.lease))
            elif not self.lease.done.is_set():
                self.lease.done.set()
            stats = self.router.stats
            stats.stream_pieces += self.pieces_sent
            if self.pieces_sent > 1 and last > self.first_at:
                stats.pieces_per_s.append((self.pieces_sent - 1) / (last - self.first_at))


async def _cancel(router: Router, lease: Lease) -> None:
    replica = lease.replica
    try:
        replica.writer.write(LEN.pack(len(CANCEL)) + CANCEL)
        await replica.writer.drain()
        while (await asyncio.wait_for(_read(replica), timeout=router.timeout_s))[:1] == PIECE:
            pass  # pieces already on their way before the replica saw the CANCEL
    except (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError) as exc:
        await router.lost(replica, exc, [])
    finally:
        lease.done.set()


async def open_stream(router: Router, prompt: str, max_tokens: int) -> Stream:
    """Queue a stream and wait for its first piece: refusals (400) come before any piece is sent."""
    start = time.perf_counter()
    frame = stream_request(prompt, max_tokens)
    future = router.enqueue(None, stream=frame)
    try:
        lease: Lease = await asyncio.wait_for(asyncio.shield(future), timeout=router.timeout_s)
    except BaseException:
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().done.set()  # lent just as we gave up: hand it straight back
        else:
            future.cancel()
        router.stats.dropped += 1
        raise
    replica = lease.replica
    try:
        replica.writer.write(LEN.pack(len(frame)) + frame)
        await replica.writer.drain()
        reply = await asyncio.wait_for(_read(replica), timeout=router.timeout_s)
    except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
        await router.lost(replica, exc, [])
        lease.done.set()
        raise ReplicaLost("the replica serving this stream stopped; retry") from exc
    except BaseException:
        asyncio.get_running_loop().create_task(_cancel(router, lease))
        raise
    if reply[:1] == PIECE:
        now = time.perf_counter()
        router.stats.streams += 1
        router.stats.first_piece_ms.append(1000 * (now - start))
        return Stream(router, lease, reply[1:].decode(), start, now)
    lease.done.set()  # refused or empty: the replica is free again
    if reply[:1] == END:  # the generator ended without a piece
        router.stats.streams += 1
        return Stream(router, lease, "", start, time.perf_counter(),
                      finish_reason=json.loads(reply[1:])["finish_reason"], pieces_sent=0)
    error = json.loads(reply[1:]) if reply[:1] == ERROR else {"error": "bad reply", "kind": "internal"}
    router.stats.errors += 1
    if error["kind"] == "unsupported":
        raise NotGenerative(error["error"])
    if error["kind"] == "input":
        raise InputRejected(error["error"])
    raise RuntimeError(error["error"])
