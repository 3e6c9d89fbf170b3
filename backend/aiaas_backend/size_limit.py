"""Refuses request bodies over the configured limit with 413, before they fill the disk."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _reply(self) -> tuple[dict[str, Any], bytes]:
        body = json.dumps(
            {
                "detail": f"request body is over this backend's limit of {self.max_bytes} bytes; "
                "send less data (load datasets on the worker instead of pickling them) or raise AIAAS_MAX_UPLOAD_BYTES",
                "code": "payload_too_large",
            }
        ).encode()
        start = {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        }
        return start, body

    async def refuse(self, send: Send, extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer the 413 (for an app that checked the size itself)."""
        start, body = self._reply()
        start["headers"] += extra_headers
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return

        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                start, body = self._reply()
                await send(start)
                await send({"type": "http.response.body", "body": body})
