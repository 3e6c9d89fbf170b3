"""Wakes event-stream readers when a run's log grows.

Writers are sync code in worker threads (report routes, the executor);
readers are async generators on the server's loop. A wake-up is only a hint:
readers also re-query on a short timeout, so a missed one costs latency, never
an event.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class EventBus:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, run_id: str) -> None:
        """Thread-safe: note that ``run_id`` has new events (after they are committed)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, run_id)

    def _wake(self, run_id: str) -> None:
        for event in self._waiters.get(run_id, ()):
            event.set()

    def subscribe(self, run_id: str) -> asyncio.Event:
        """Register before querying, so a publish between query and wait is not lost."""
        event = asyncio.Event()
        self._waiters[run_id].add(event)
        return event

    def unsubscribe(self, run_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(run_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[run_id]
