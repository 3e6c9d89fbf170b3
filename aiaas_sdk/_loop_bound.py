"""Close an async connection pool together with the event loop that owns it.

A pool is tied to one event loop. ``asyncio.run(...)`` closes its loop when the
coroutine returns, and a pool still open then is reported at exit ("Unclosed
client session", one line per pooled connection) although the user did nothing
wrong. Before closing a loop, ``asyncio.run`` finalises the async generators that
are still suspended in it (``loop.shutdown_asyncgens``); a guard generator
suspended in the loop turns that into closing the pool, inside the loop, on time.
A loop that never closes (Jupyter's) keeps its pool for the whole session.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable


async def close_with_loop(aclose: Callable[[], Awaitable[None]]) -> AsyncGenerator[None, None]:
    """Arrange for ``aclose()`` to run when the running loop shuts down.

    Keep the returned generator referenced as long as the pool lives (the loop holds it
    weakly) and ``await guard.aclose()`` to close the pool earlier yourself.
    """

    async def guard() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await aclose()

    armed = guard()
    await armed.__anext__()
    return armed
