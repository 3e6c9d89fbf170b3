"""Streamed generation: ``POST /v1/deployments/{name}/stream`` answers NDJSON, one text piece a line.

Lines are ``{"text": piece}``, then ``{"done": true, "finish_reason": ...}``, or
``{"error": message, "code": ...}`` when the model fails mid-stream. Refusals
(no generator method, a prompt the model will not take, ``max_tokens`` out of
range, a full queue) come before the first piece, as a 4xx/5xx JSON answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from aiaas_sdk.wire import StreamRequest

from ..deps import bearer_token
from ..errors import ApiError
from ..metrics import Metrics
from ..serving.stream import NotGenerative, Stream, open_stream
from .predict import disconnected, predict_target, runtime_or_503, serving_errors

router = APIRouter(tags=["deployments"])

NDJSON = "application/x-ndjson"


async def start_stream(request: Request, name: str, token: str, prompt: str, max_tokens: int) -> tuple[Stream, str]:
    """Queue the stream and wait for its first piece (or its refusal, as an ApiError); also the deployment id."""
    dep_id, _ = await predict_target(request, name, token)
    serving = request.app.state.serving
    if not getattr(serving, "streams", True):
        raise ApiError(400, f"streaming needs the local serving runtime; this backend serves deployments on "
                       f"{serving.name!r} (Ray Serve), which answers dep.predict() only: start the backend "
                       "without `--executor ray` to stream", "streaming_unsupported")
    runtime = runtime_or_503(request, name, dep_id)
    metrics: Metrics = request.app.state.metrics
    started = time.perf_counter()
    try:
        with serving_errors(runtime.config.timeout_s):
            try:
                stream = await open_stream(runtime.router, prompt, max_tokens)
            except NotGenerative as exc:
                raise ApiError(400, f"deployment {name!r} cannot stream: {exc}", "not_generative") from None
    except ApiError as exc:
        metrics.predict_done(name, dep_id, exc.status_code)
        raise
    metrics.stream_started(name, dep_id, time.perf_counter() - started)
    return stream, dep_id


async def until_disconnect(request: Request, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """``pieces`` until the caller goes away; then the generation is stopped at once, not at the next piece.

    Starlette may notice the disconnect first and cancel the response: either way the
    step in flight (which holds the generator) is cancelled, which stops the generation.
    """
    gone = asyncio.ensure_future(disconnected(request))
    iterator = pieces.__aiter__()
    step: asyncio.Future[str] | None = None
    try:
        while True:
            step = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                piece = step.result()
            except StopAsyncIteration:
                return
            yield piece
    finally:
        gone.cancel()
        if step is not None and not step.done():
            step.cancel()  # the generator runs inside it: its cleanup asks the replica to stop
        else:
            with contextlib.suppress(RuntimeError):
                await iterator.aclose()  # type: ignore[attr-defined]


@router.post("/v1/deployments/{name}/stream", operation_id="stream")
async def stream(name: str, body: StreamRequest, request: Request,
                 token: Annotated[str, Depends(bearer_token)]) -> StreamingResponse:
    """Stream the text pieces the model's ``generate(prompt, max_tokens=...)`` yields, as NDJSON."""
    opened, dep_id = await start_stream(request, name, token, body.prompt, body.max_tokens)
    metrics: Metrics = request.app.state.metrics

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for piece in until_disconnect(request, opened.pieces()):
                yield json.dumps({"text": piece}).encode() + b"\n"
        except Exception as exc:  # noqa: BLE001 - the status is sent: the failure goes in the stream
            yield json.dumps({"error": f"the stream failed: {exc}", "code": "stream_failed"}).encode() + b"\n"
            return
        finally:
            metrics.stream_done(name, dep_id, opened.pieces_sent)
        if opened.finish_reason is not None:
            yield json.dumps({"done": True, "finish_reason": opened.finish_reason}).encode() + b"\n"

    return StreamingResponse(lines(), media_type=NDJSON, headers={"Cache-Control": "no-cache"})


__all__ = ["NDJSON", "router", "start_stream", "until_disconnect"]
