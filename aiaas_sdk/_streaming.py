"""``dep.stream()`` / ``dep.astream()``: the text pieces of a deployment's ``generate``, as they come.

Request building and line parsing are I/O-free and shared; the sync and async
drivers only move bytes. A refusal (no generator method, a prompt over the
model's context, ``max_tokens`` out of range) arrives before the first piece
as an HTTP error and becomes the matching SDK error; a full queue is retried
like ``predict``. Leaving the loop early closes the connection, which stops
the generation on the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pydantic

from ._ops import Call
from ._errors import ServerError, error_from_response, error_from_transport, invalid_from_validation
from .wire import StreamRequest

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client

_RETRY = frozenset({429, 503})
_ATTEMPTS = 8


def request(client: Client | AsyncClient, name: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    try:
        body = StreamRequest(prompt=prompt, max_tokens=max_tokens)
    except pydantic.ValidationError as exc:
        raise invalid_from_validation(exc, "stream arguments") from exc
    client._request_kwargs(Call("POST", f"/v1/deployments/{name}/stream"))  # the API-key check, before sending
    return {"method": "POST", "url": f"/v1/deployments/{name}/stream", "json": body.model_dump(),
            # A piece may take a while (a big model, a long queue): only a silent connection is dead.
            "timeout": httpx.Timeout(client._timeout, read=max(client._timeout, 300.0))}


def piece(line: str) -> str | None:
    """The text of one NDJSON line; None for the closing line; raises for an error line."""
    if not line.strip():
        return None
    data = json.loads(line)
    if "text" in data:
        return str(data["text"])
    if "error" in data:
        raise ServerError(f"{data['error']} (the stream was cut short)", code=data.get("code"))
    return None


def sync_stream(client: Client, name: str, prompt: str, max_tokens: int) -> Iterator[str]:
    kwargs = request(client, name, prompt, max_tokens)
    for attempt in range(_ATTEMPTS):
        try:
            with client._http.stream(**kwargs) as response:
                if response.status_code in _RETRY and attempt + 1 < _ATTEMPTS:
                    response.read()
                    time.sleep(client._retry.delay(attempt, response))
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    if (text := piece(line)) is not None:
                        yield text
                return
        except httpx.TransportError as exc:
            raise error_from_transport(exc, client.url) from exc


async def async_stream(client: AsyncClient, name: str, prompt: str, max_tokens: int) -> AsyncIterator[str]:
    kwargs = request(client, name, prompt, max_tokens)
    await client._bind_loop()
    for attempt in range(_ATTEMPTS):
        try:
            async with client._http.stream(**kwargs) as response:
                if response.status_code in _RETRY and attempt + 1 < _ATTEMPTS:
                    await response.aread()
                    await asyncio.sleep(client._retry.delay(attempt, response))
                    continue
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    if (text := piece(line)) is not None:
                        yield text
                return
        except httpx.TransportError as exc:
            raise error_from_transport(exc, client.url) from exc
