"""A front process: one more core on the API's port, for predicts (``python -m aiaas_backend.fronts.front``).

It binds the API's host and port with ``SO_REUSEPORT`` beside the primary, so the kernel
spreads new connections over the processes. Predicts are answered here up to the queue:
HTTP, the key (its own cache of the database), the body size, the frame and JSON checks;
the checked work then goes to the primary's routers over ``predict.sock`` (:mod:`.link`),
and the answer comes back the same way. Everything else is proxied to the primary
(:mod:`.proxy`). Its settings arrive as JSON on stdin from the primary (:mod:`.supervisor`).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from types import SimpleNamespace
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from aiaas_sdk import tensor_codec

from ..audit import KeyUsage
from ..config import Settings
from ..db import make_engine, session_factory
from ..errors import ApiError
from ..fast_predict import bearer_and_binary, error_answer, read_body
from ..keys import KEY_CACHE_S
from ..predict_targets import PredictTargets
from ..routes.predict import (
    answered_before_leaving,
    json_answer,
    json_work,
    target_lookup,
)
from ..serving.inputs import check_inputs
from ..size_limit import BodySizeLimit
from ..tls import uvicorn_options
from . import wire
from .cork import uvicorn_http_class
from .link import PrimaryLink
from .proxy import Proxy

log = logging.getLogger("aiaas.fronts")

_PREFIX, _SUFFIX = "/v1/deployments/", "/predict"
_BINARY = tensor_codec.CONTENT_TYPE.encode()
_FAILED = b"Internal Server Error"


class Front:
    """The front's ASGI app: predicts forwarded to the primary's routers, the rest proxied."""

    def __init__(self, settings: Settings, secret: str, predict_socket: str, api_socket: str) -> None:
        sessions = session_factory(make_engine(settings.sqlalchemy_url))
        # What routes.deployments.deployment_for_key needs of the app's state.
        self.state = SimpleNamespace(sessions=sessions, key_usage=KeyUsage(
            sessions, settings.key_touch_every_s, settings.key_audit_every_s))
        self.targets = PredictTargets(target_lookup(self.state), KEY_CACHE_S)
        self.rate_limited = bool(settings.rate_requests_per_s)
        self.predict_socket = predict_socket
        self.link = PrimaryLink(on_lost=self._primary_lost)
        self.proxy = Proxy(api_socket, secret)
        # Predicts check their declared size themselves; everything else is counted on its way to the primary.
        self.limit = BodySizeLimit(self.proxy, max_bytes=settings.max_upload_bytes)
        self.server: uvicorn.Server | None = None
        self.pid = str(os.getpid()).encode()

    def _primary_lost(self) -> None:
        log.warning("front %s: the primary closed predict.sock; stopping", os.getpid())
        if self.server is not None:
            self.server.should_exit = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                name = path[len(_PREFIX):-len(_SUFFIX)]
                token, binary = bearer_and_binary(scope)
                # A body without a declared length (chunked) goes the long way, counted by the limit.
                size = _declared_size(scope) if name and "/" not in name and token and binary is not None else None
                if size is not None:
                    if size > self.limit.max_bytes:
                        await self.limit.refuse(send, ((b"x-aiaas-front", self.pid),))
                    else:
                        await self._predict(scope, receive, send, name, token, binary)  # type: ignore[arg-type]
                    return
        await self.limit(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.link.connect(self.predict_socket)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.link.close()
                await self.proxy.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _predict(self, scope: Scope, receive: Receive, send: Send, name: str, token: str,
                       binary: bool) -> None:
        client = scope.get("client")
        dep_id = ""
        try:
            entry = (token, name, client[0] if client else None)
            dep_id, signature = self.targets.peek(entry) or await self.targets.get(entry)
            body = await read_body(receive)
            if body is None:
                self.link.tally(name, dep_id, 499)
                return
            is_tensor = True
            if binary:
                decoded = tensor_codec.decode(body)
                array = check_inputs(decoded, signature)
                payload = body if array is decoded else tensor_codec.encode(array)  # cast: send the cast
            else:
                items, array = json_work(body, signature)
                is_tensor = items is None
                payload = tensor_codec.encode(array) if is_tensor else json.dumps(items).encode()
        except ApiError as exc:
            if dep_id:  # a refused key or an unknown name is not a deployment's request
                self.link.tally(name, dep_id, exc.status_code)
            await self._error(send, exc)
            return
        except tensor_codec.CodecError as exc:
            self.link.tally(name, dep_id, 400)
            await self._error(send, ApiError(400, str(exc), "bad_inputs"))
            return
        future = self.link.submit(name, dep_id, token if self.rate_limited else "", is_tensor, payload)
        left: set[asyncio.Future[Any]] | None = scope.get("aiaas.left")
        try:
            if left is None:  # a protocol that does not tell us: a task watches for the disconnect
                if not await answered_before_leaving(future, receive):
                    return  # the primary counts the 499 when it drops the work
            else:  # the connection cancels the future if the caller leaves (cork.corked_http)
                left.add(future)
                try:
                    await future
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if future.cancelled() and task is not None and not task.cancelling():
                        return  # the caller left; the primary counts the 499 when it drops the work
                    raise
                finally:
                    left.discard(future)
            kind, answer = future.result()
        except ConnectionError:
            await self._error(send, ApiError(503, "the primary server process stopped; retry shortly",
                                             "unavailable", {"Retry-After": "1"}))
            return
        await self._reply(send, kind, answer, binary)

    async def _error(self, send: Send, exc: ApiError) -> None:
        body, headers = error_answer(exc)
        await send({"type": "http.response.start", "status": exc.status_code,
                    "headers": [*headers, (b"x-aiaas-front", self.pid)]})
        await send({"type": "http.response.body", "body": body})

    async def _reply(self, send: Send, kind: int, answer: bytes, binary: bool) -> None:
        status, content_type = 200, _BINARY if binary else b"application/json"
        extra: list[tuple[bytes, bytes]] = []
        if kind == wire.TENSOR:
            payload = answer if binary else json_answer(tensor_codec.decode(answer), None)
        elif kind == wire.ITEMS:
            payload = b'{"outputs": ' + answer + b"}"  # what json_answer writes for items
        elif kind == wire.ERROR:
            error = json.loads(answer)
            status, payload = error["status"], error["body"].encode()
            content_type = b"application/json"
            extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error["headers"].items()
                     if k not in ("content-type", "content-length")]
        else:  # the model raised: what the primary's server error handler answers
            status, payload, content_type = 500, _FAILED, b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(payload)).encode()),
            (b"x-aiaas-front", self.pid), *extra]})
        await send({"type": "http.response.body", "body": payload})


def _declared_size(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the primary dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the prctl
        sys.exit(0)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def main() -> None:
    config: dict[str, Any] = json.loads(sys.stdin.read())
    _die_with_parent(config["parent"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per proxied request otherwise
    settings = Settings(**config["settings"])
    sock = _listen(settings.host, config["port"])
    front = Front(settings, config["secret"], wire.socket_path(config["fronts_dir"], "predict.sock"),
                  wire.socket_path(str(settings.api_socket_dir), "api.sock"))
    front.server = server = uvicorn.Server(uvicorn.Config(
        front, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5,
        http=uvicorn_http_class(), **uvicorn_options(settings)))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
