"""The predict path's key cache: one lookup per burst, refreshed in use, revocation within its ttl."""

from __future__ import annotations

import asyncio

import pytest

from aiaas_backend.predict_targets import Entry, PredictTargets, Target

ENTRY: Entry = ("key", "dep", "127.0.0.1")


class Backend:
    """Stands in for the database: answers after ``delay`` and counts the questions."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.calls = 0
        self.revoked = False

    async def lookup(self, entry: Entry) -> Target:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.revoked:
            raise PermissionError(f"key {entry[0]} revoked")
        return f"dep-{self.calls}", {"shape": [8], "dtype": "float32"}


def test_a_burst_of_misses_shares_one_lookup() -> None:
    async def main() -> None:
        backend = Backend()
        targets = PredictTargets(backend.lookup, ttl_s=1.0)
        answers = await asyncio.gather(*(targets.get(ENTRY) for _ in range(200)))
        assert backend.calls == 1
        assert {a[0] for a in answers} == {"dep-1"}
        assert targets.peek(ENTRY) == answers[0]

    asyncio.run(main())


def test_an_entry_in_use_is_refreshed_in_the_background_and_never_waits() -> None:
    async def main() -> None:
        backend = Backend(delay=0.05)
        targets = PredictTargets(backend.lookup, ttl_s=0.2)
        await targets.get(ENTRY)
        deadline = asyncio.get_running_loop().time() + 1.0
        misses = 0
        while asyncio.get_running_loop().time() < deadline:  # steady use for five lifetimes
            misses += targets.peek(ENTRY) is None
            await asyncio.sleep(0.01)
        assert misses == 0
        assert 3 <= backend.calls <= 12  # refreshed about every half lifetime, not per request

    asyncio.run(main())


def test_a_revoked_key_stops_within_the_ttl_and_the_next_request_sees_the_refusal() -> None:
    async def main() -> None:
        backend = Backend(delay=0.01)
        targets = PredictTargets(backend.lookup, ttl_s=0.2)
        await targets.get(ENTRY)
        backend.revoked = True
        loop = asyncio.get_running_loop()
        revoked_at = loop.time()
        while targets.peek(ENTRY) is not None:
            await asyncio.sleep(0.005)
        assert loop.time() - revoked_at <= 0.2 + 0.05
        with pytest.raises(PermissionError, match="revoked"):
            await targets.get(ENTRY)

    asyncio.run(main())


def test_clear_forgets_now_and_drops_answers_already_on_their_way() -> None:
    async def main() -> None:
        backend = Backend(delay=0.05)
        targets = PredictTargets(backend.lookup, ttl_s=5.0)
        pending = asyncio.ensure_future(targets.get(ENTRY))
        await asyncio.sleep(0.01)
        targets.clear()  # e.g. a key was revoked while its lookup was in flight
        await pending  # its caller still gets the answer it asked for...
        assert targets.peek(ENTRY) is None  # ...but it is not kept
        await targets.get(ENTRY)
        assert backend.calls == 2 and targets.peek(ENTRY) is not None
        targets.clear()
        assert targets.peek(ENTRY) is None

    asyncio.run(main())


def test_a_caller_that_leaves_does_not_cancel_the_lookup_for_the_others() -> None:
    async def main() -> None:
        backend = Backend(delay=0.05)
        targets = PredictTargets(backend.lookup, ttl_s=5.0)
        leaver = asyncio.ensure_future(targets.get(ENTRY))
        stayer = asyncio.ensure_future(targets.get(ENTRY))
        await asyncio.sleep(0.01)
        leaver.cancel()
        assert (await stayer)[0] == "dep-1"
        assert backend.calls == 1

    asyncio.run(main())
