"""Everything a front does not answer itself goes to the primary unchanged, streamed both ways.

Runs, events, deployments, datasets, metrics and the workers' routes keep state in the
primary's memory (the event bus, the rate limit's buckets, the Prometheus registry, the
executor), so the primary answers them. The caller's address rides along in a header the
primary trusts only with the fronts' secret (:class:`FromFront`): audit entries, the rate
limit and the loopback rule of ``/metrics`` see the real caller.
"""

from __future__ import annotations

import asyncio
import hmac
import os

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECRET = b"x-aiaas-front-secret"
CLIENT = b"x-aiaas-front-client"
SCHEME = b"x-aiaas-front-scheme"
_OURS = {SECRET, CLIENT, SCHEME}
# Per connection, not per message: each hop has its own.
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"}


class FromFront:
    """Primary-side ASGI middleware: a request a front proxied keeps its caller's address and scheme."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            ours = {k: v for k, v in headers if k in _OURS}
            if ours:
                scope["headers"] = [(k, v) for k, v in headers if k not in _OURS]
                if hmac.compare_digest(ours.get(SECRET, b""), self.secret):
                    host, _, port = ours.get(CLIENT, b"").decode("latin-1").rpartition(":")
                    scope["client"] = (host, int(port)) if host else None
                    scope["scheme"] = ours.get(SCHEME, b"http").decode("latin-1")
        await self.app(scope, receive, send)


class Proxy:
    """Sends a request to the primary's HTTP Unix socket and streams its answer back."""

    def __init__(self, socket_path: str, secret: str) -> None:
        self.secret = secret.encode()
        self.tag = (b"x-aiaas-front", str(os.getpid()).encode())  # which process answered (tests, debugging)
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path), timeout=httpx.Timeout(None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP and k not in _OURS]
        headers += [(SECRET, self.secret), (SCHEME, scope.get("scheme", "http").encode())]
        if client:
            headers.append((CLIENT, f"{client[0]}:{client[1]}".encode("latin-1")))
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        body_read = asyncio.Event()

        async def body() -> httpx.AsyncByteStream:  # type: ignore[misc]
            try:
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    if chunk := message.get("body", b""):
                        yield chunk
                    if not message.get("more_body"):
                        return
            finally:
                body_read.set()

        if not has_body:
            body_read.set()
        url = scope.get("raw_path", scope["path"].encode()) + (b"?" + scope["query_string"] if scope["query_string"]
                                                                else b"")
        request = self.client.build_request(scope["method"], "http://primary" + url.decode("latin-1"),
                                            headers=headers, content=body() if has_body else None)
        relay = asyncio.ensure_future(self._relay(request, send))
        left = asyncio.ensure_future(_caller_left(receive, body_read))
        try:
            await asyncio.wait((relay, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            if not relay.done():
                relay.cancel()  # the caller left a stream (events): close ours to the primary
        if not relay.cancelled():
            relay.result()

    async def _relay(self, request: httpx.Request, send: Send) -> None:
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError:
            body = b'{"detail":"the primary server process is not answering; retry shortly","code":"unavailable"}'
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [*((k, v) for k, v in response.headers.raw if k.lower() not in _HOP), self.tag]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _caller_left(receive: Receive, body_read: asyncio.Event) -> None:
    """Returns when the caller disconnects (watched only once its body went to the primary)."""
    await body_read.wait()
    message: Message = {"type": ""}
    while message["type"] != "http.disconnect":
        message = await receive()


__all__ = ["FromFront", "Proxy"]
