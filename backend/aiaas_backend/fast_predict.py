"""The hottest requests, answered without FastAPI: authenticated predicts.

A binary tensor frame or a JSON body (``application/json``: items for the module's hooks, or
numbers) sent to ``POST /v1/deployments/{name}/predict`` with a key the predict cache already
knows, for a deployment with a ready replica, is answered here: the body goes to the
deployment's router and the answer straight back. That skips route matching, dependency
solving and the Request/Response objects, about a third of the API server's CPU per predict
in a py-spy profile under load. Everything else (other content types, a key not yet cached,
a deployment still starting) goes on to the route in :mod:`.routes.predict`, which answers the
same way; both paths share its checks, its error answers and its metrics.

It sits inside the rate limit, body size and HTTP metrics middlewares, so those apply as before.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from aiaas_sdk import tensor_codec

from .errors import ApiError
from .routes.predict import CALLER_LEFT, json_answer, predict_body

_PREFIX = "/v1/deployments/"
_SUFFIX = "/predict"
_BINARY = tensor_codec.CONTENT_TYPE.encode()
_JSON = b"application/json"
_HEADERS = {True: [(b"content-type", _BINARY)], False: [(b"content-type", _JSON)]}


def bearer_and_binary(scope: Scope) -> tuple[str | None, bool | None]:
    """The bearer token, and True for a tensor frame, False for JSON, None for anything else."""
    token, binary = None, None
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else None
        elif key == b"content-type":
            binary = True if value.startswith(_BINARY) else False if value.startswith(_JSON) else None
    return token or None, binary


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (no copy when it came in one piece), or None if the client left."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
    return b"".join(parts)


class FastPredict:
    """ASGI middleware: binary and JSON predicts from known keys are answered here, the rest pass on."""

    def __init__(self, app: ASGIApp, state: Any, route: BaseRoute) -> None:
        self.app = app
        self.state = state
        self.route = route  # what the HTTP metrics label these requests with

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        name, dep_id, signature, runtime, binary = target
        scope["route"] = self.route
        metrics = self.state.metrics
        try:
            status = await self._answer(scope, receive, send, dep_id, signature, runtime, binary,
                                        metrics.latency_observer(name, dep_id))
        except ApiError as exc:
            status = exc.status_code
            await _send_error(send, exc)
        except Exception:  # the model failed (not the inputs): a 500, as on the route
            metrics.predict_done(name, dep_id, 500)
            raise
        metrics.predict_done(name, dep_id, status)

    def _target(self, scope: Scope) -> tuple[str, str, Any, Any, bool] | None:
        path: str = scope["path"]
        if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return None
        name = path[len(_PREFIX):-len(_SUFFIX)]
        if not name or "/" in name:
            return None
        token, binary = bearer_and_binary(scope)
        if token is None or binary is None:
            return None
        client = scope.get("client")
        cached = self.state.predict_targets.peek((token, name, client[0] if client else None))
        if cached is None:
            return None
        dep_id, signature = cached
        runtime = self.state.serving.runtime(dep_id)
        if runtime is None or not runtime.router.ready_replicas:
            return None  # the route says why (503 with Retry-After)
        return name, dep_id, signature, runtime, binary

    async def _answer(self, scope: Scope, receive: Receive, send: Send, dep_id: str, signature: Any,
                      runtime: Any, binary: bool, observe: Any) -> int:
        body = await read_body(receive)
        if body is None:
            return 499
        output, items = await predict_body(self.state, dep_id, runtime, signature, body, binary, observe, receive)
        if output is CALLER_LEFT:
            await send({"type": "http.response.start", "status": 499, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return 499
        payload = tensor_codec.encode(output) if binary else json_answer(output, items)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_HEADERS[binary], (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        return 200


def error_answer(exc: ApiError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers the app's ApiError handler gives for ``exc`` (the fronts send them too)."""
    fields: dict[str, object] = {"detail": exc.detail}
    if exc.code:
        fields["code"] = exc.code
    fields.update(exc.extra)
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    return body, headers


async def _send_error(send: Send, exc: ApiError) -> None:
    body, headers = error_answer(exc)
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["FastPredict", "error_answer"]
