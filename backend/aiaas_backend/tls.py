"""TLS for the API: uvicorn's own, on the TCP socket only.

The Unix socket in the data dir (the sandboxed workers' only way to the API) stays plain
HTTP: it never leaves the machine, only what can open the file reaches it, and the workers
inside a sandbox hold no CA bundle. uvicorn applies one ``ssl`` setting to every socket it
serves, so that socket gets a plain listener of its own, started and stopped with the server.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from .config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments for TLS (none without a certificate)."""
    if settings.ssl_certfile is None:
        return {}
    return {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)}


async def serve_plain(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve ``server``'s app on ``sock`` without TLS; call once ``server`` has started.

    The listener joins ``server.servers``, so uvicorn closes it and waits for its
    connections on shutdown like its own.
    """
    config = server.config

    def protocol() -> asyncio.Protocol:
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state)

    plain = await asyncio.get_running_loop().create_server(protocol, sock=sock, backlog=config.backlog)
    server.servers.append(plain)


__all__ = ["serve_plain", "uvicorn_options"]
