"""API request latency by route template, and open event streams, as a pure ASGI middleware.

Labels use the route's path template (``/v1/runs/{run_id}``), never the raw
path, so the number of series stays bounded whatever clients send; requests
that match no route share the label ``unmatched``.
"""

from __future__ import annotations

import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .instruments import Metrics

_STREAM = b"text/event-stream"


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (found after routing), or ``unmatched``."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    app = scope.get("app")
    # Older Starlette does not leave the route in the scope: match it again (only then).
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match == Match.FULL and hasattr(candidate, "path"):
            return str(candidate.path)
    return "unmatched"


class HttpMetrics:
    """Times each HTTP request; an event-stream response counts as an open stream until it ends."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.metrics.enabled:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500  # what the client sees if the app raises before answering
        stream = False

        async def watch(message: Message) -> None:
            nonlocal code, stream
            if message["type"] == "http.response.start":
                code = message["status"]
                for name, value in message.get("headers") or ():
                    if name == b"content-type":
                        if value.startswith(_STREAM):
                            stream = True
                            self.metrics.event_streams.inc()
                        break
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if stream:
                self.metrics.event_streams.dec()
            else:
                self.metrics.http_latency.labels(scope["method"], route_template(scope), str(code)).observe(
                    time.perf_counter() - start)


__all__ = ["HttpMetrics", "route_template"]
