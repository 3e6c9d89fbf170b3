"""Which deployment a predict request's key and name point at, without the database on the hot path.

An entry (key, deployment name, caller's address) maps to the deployment's id and input
signature. It is good for ``ttl_s`` (``KEY_CACHE_S``), so a revoked key, an expired shared
key or a deleted deployment stops working within that time. While an entry is in use it is
refreshed in the background once it is half its age: under steady load no request ever waits
for the database, and a refresh that fails (the key was revoked) removes the entry, so the next
request looks the key up itself and gets the real refusal. Requests that find no usable entry
share one lookup (single flight): a burst after a restart costs one query, not hundreds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Entry = tuple[str, str, "str | None"]  # (key, deployment name, caller's address)
Target = tuple[str, "dict[str, Any] | None"]  # (deployment id, input signature)
Lookup = Callable[[Entry], Awaitable[Target]]

_MAX_ENTRIES = 10_000


class PredictTargets:
    """A short-lived, self-refreshing cache in front of ``lookup`` (one event loop's)."""

    def __init__(self, lookup: Lookup, ttl_s: float) -> None:
        self._lookup = lookup
        self.ttl_s = ttl_s
        self._entries: dict[Entry, tuple[float, Target]] = {}  # entry -> (fetched at, target)
        self._inflight: dict[Entry, asyncio.Future[Target]] = {}
        self._generation = 0  # bumped by clear(): answers of lookups started before it are dropped

    def peek(self, entry: Entry) -> Target | None:
        """The cached target if still good (starting its refresh when due), else None. Never waits."""
        hit = self._entries.get(entry)
        if hit is None:
            return None
        age = asyncio.get_running_loop().time() - hit[0]
        if age >= self.ttl_s:
            return None
        if age >= self.ttl_s / 2 and entry not in self._inflight:
            self._start(entry)
        return hit[1]

    async def get(self, entry: Entry) -> Target:
        """The target for ``entry``: cached, or from the one lookup in flight for it (raising its error)."""
        target = self.peek(entry)
        if target is not None:
            return target
        future = self._inflight.get(entry) or self._start(entry)
        # Shielded: a caller that leaves does not cancel the others' answer.
        return await asyncio.shield(future)

    def clear(self) -> None:
        """Forget everything now (a key was revoked in this process); lookups in flight are not stored."""
        self._entries.clear()
        self._inflight.clear()
        self._generation += 1

    def _start(self, entry: Entry) -> asyncio.Future[Target]:
        task = asyncio.ensure_future(self._fetch(entry, self._generation))
        # A background refresh may have no one awaiting it: its error is still "retrieved".
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._inflight[entry] = task
        return task

    async def _fetch(self, entry: Entry, generation: int) -> Target:
        loop = asyncio.get_running_loop()
        try:
            target = await self._lookup(entry)
        except BaseException:
            if generation == self._generation:
                self._inflight.pop(entry, None)
                # A refresh that fails means the entry is no longer good (a revoked key):
                # drop it so the next request asks again and gets the refusal itself.
                self._entries.pop(entry, None)
            raise
        if generation == self._generation:
            self._inflight.pop(entry, None)
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[entry] = (loop.time(), target)
        return target


__all__ = ["Entry", "PredictTargets", "Target"]
