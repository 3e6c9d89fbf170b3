"""OpenAI's completions protocol for generative deployments: ``/v1/openai/{name}/completions`` and ``/models``.

``openai.OpenAI(base_url=f"{url}/v1/openai/{name}", api_key=key)`` works against
it, as does any tool built on that client. It authenticates with the same keys
(``Authorization: Bearer``) and runs on the deployment's own queue. Errors keep
our ``{"detail", "code"}`` body and add OpenAI's ``{"error": {...}}`` so its
client shows the message.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..deps import bearer_token
from ..errors import ApiError
from ..metrics import Metrics
from .predict import predict_target
from .streaming import start_stream, until_disconnect

router = APIRouter(prefix="/v1/openai/{name}", tags=["openai"])


class CompletionCreate(BaseModel):
    """The fields of OpenAI's completions request we honour; the others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=1, le=65536)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


def _openai_error(exc: ApiError) -> JSONResponse:
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = {"detail": exc.detail, "code": exc.code,
            "error": {"message": exc.detail, "type": kind, "param": None, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _chunk(cid: str, created: int, name: str, text: str, finish: str | None) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": name,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


@router.get("/models", operation_id="openai_models")
async def models(name: str, request: Request, token: Annotated[str, Depends(bearer_token)]) -> Any:
    """The one model this base URL serves: the deployment itself."""
    try:
        await predict_target(request, name, token)
    except ApiError as exc:
        return _openai_error(exc)
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "aiaas"}]}


@router.post("/completions", operation_id="openai_completions")
async def completions(name: str, body: CompletionCreate, request: Request,
                      token: Annotated[str, Depends(bearer_token)]) -> Any:
    """A completion of ``prompt`` by the deployment's ``generate``; ``stream=true`` answers OpenAI's SSE."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    try:
        if body.model != name:
            raise ApiError(404, f"this base URL serves the deployment {name!r}; pass model={name!r} (or point "
                           f"base_url at /v1/openai/{body.model})", "model_not_found")
        if len(prompts) != 1:
            raise ApiError(400, f"send one prompt per request (got {len(prompts)}); call again for each",
                           "one_prompt")
        opened, dep_id = await start_stream(request, name, token, prompts[0], body.max_tokens)
    except ApiError as exc:
        return _openai_error(exc)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    metrics: Metrics = request.app.state.metrics
    pieces = until_disconnect(request, opened.pieces())
    if not body.stream:
        try:
            text = "".join([piece async for piece in pieces])
        except Exception as exc:  # noqa: BLE001 - nothing sent yet: an error answer
            return _openai_error(ApiError(500, f"the model failed while generating: {exc}", "stream_failed"))
        finally:
            metrics.stream_done(name, dep_id, opened.pieces_sent)
        return {**_chunk(cid, created, name, text, _finish(opened.finish_reason)),
                "usage": {"prompt_tokens": len(prompts[0]), "completion_tokens": opened.pieces_sent,
                          "total_tokens": len(prompts[0]) + opened.pieces_sent}}

    async def events() -> AsyncIterator[bytes]:
        try:
            async for piece in pieces:
                yield b"data: " + json.dumps(_chunk(cid, created, name, piece, None)).encode() + b"\n\n"
        except Exception as exc:  # noqa: BLE001 - the status is sent: the failure goes in the stream
            error = {"error": {"message": f"the model failed while generating: {exc}", "type": "server_error"}}
            yield b"data: " + json.dumps(error).encode() + b"\n\n"
            return
        finally:
            metrics.stream_done(name, dep_id, opened.pieces_sent)
        if opened.finish_reason is not None:
            yield b"data: " + json.dumps(_chunk(cid, created, name, "", _finish(opened.finish_reason))).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


__all__ = ["router"]
