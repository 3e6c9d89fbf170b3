"""The hot path: predict requests (tensor frames, JSON numbers, or JSON values for the module's hooks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from aiaas_sdk import tensor_codec

from ..deps import bearer_token
from ..errors import ApiError
from ..metrics import Metrics
from ..models import Run
from ..predict_targets import Entry, Lookup, PredictTargets, Target
from ..serving.inputs import check_inputs, check_json_inputs
from ..serving.router import InputRejected, ItemsRejected, Overloaded, ReplicaLost
from .deployments import deployment_for_key

router = APIRouter(tags=["deployments"])


async def disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so nothing else arrives)."""
    await _gone(request.receive)


async def _gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def answered_before_leaving(future: asyncio.Future[Any], receive: Receive) -> bool:
    """Wait for ``future``; False if the client disconnects first, and then the future is
    cancelled, so its queued work is dropped, not computed. One task (the disconnect watch)."""
    gone = asyncio.ensure_future(_gone(receive))
    try:
        await asyncio.wait((future, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        gone.cancel()
    if future.done():
        return True
    future.cancel()
    return False


async def predict_target(request: Request, name: str, token: str) -> Target:
    """Deployment id and input signature for (key, name): from :class:`PredictTargets`, so most
    requests touch no database (a revoked key stops working within ``KEY_CACHE_S``)."""
    # Keyed by address too, so that a key's use from each address reaches the audit log.
    where = request.client.host if request.client else None
    targets: PredictTargets = request.app.state.predict_targets
    return await targets.get((token, name, where))


def target_lookup(state: Any) -> Lookup:
    """What :class:`PredictTargets` calls on a miss or a refresh: the database, in the threadpool."""

    async def lookup(entry: Entry) -> Target:
        token, name, where = entry

        def read() -> Target:
            with state.sessions() as session:
                dep = deployment_for_key(state, session, token, name, where)
                run = session.get(Run, dep.run_id)
                return dep.id, (run.input_signature if run else None)

        return await run_in_threadpool(read)

    return lookup


def runtime_or_503(request: Request, name: str, dep_id: str) -> Any:
    return ready_runtime(request.app.state.serving, name, dep_id)


def ready_runtime(serving: Any, name: str, dep_id: str) -> Any:
    """The deployment's runtime, or a 503 while it has no ready replica (the fronts' path too)."""
    runtime = serving.runtime(dep_id)
    if runtime is None or runtime.router.ready_replicas == 0:
        raise ApiError(503, f"deployment {name!r} has no ready replica yet; retry shortly", "not_ready",
                       {"Retry-After": "1"})
    return runtime


def overloaded(exc: Overloaded) -> ApiError:
    """The 429 for a full queue (for callers that catch the router's refusal without :func:`serving_errors`)."""
    return ApiError(429, str(exc), "overloaded", {"Retry-After": "1"})


@contextmanager
def serving_errors(timeout_s: float) -> Iterator[None]:
    """The router's refusals as HTTP answers that name the problem."""
    try:
        yield
    except Overloaded as exc:
        raise overloaded(exc) from None
    except TimeoutError:
        raise ApiError(504, f"the request took longer than the deployment's timeout ({timeout_s} s)",
                       "timeout") from None
    except ReplicaLost as exc:
        raise ApiError(503, str(exc), "replica_lost", {"Retry-After": "0"}) from None
    except ItemsRejected as exc:
        raise ApiError(400, str(exc), "bad_items") from None
    except InputRejected as exc:
        raise ApiError(400, str(exc), "bad_inputs") from None


@router.post("/v1/deployments/{name}/predict", operation_id="predict")
async def predict(name: str, request: Request, token: Annotated[str, Depends(bearer_token)]) -> Response:
    """Run the model on a batch. Binary tensor frames (``application/x-aiaas-tensor``),
    JSON numbers ``{"inputs": [[...], ...]}``, or JSON values ``{"items": [...]}`` for a
    module with ``decode_request``/``encode_response``; the answer comes in the same encoding."""
    dep_id, signature = await predict_target(request, name, token)
    # Counted only once the deployment is known: unknown names never become label values.
    metrics: Metrics = request.app.state.metrics
    try:
        response = await _answer(request, name, dep_id, signature, metrics.latency_observer(name, dep_id))
    except ApiError as exc:
        metrics.predict_done(name, dep_id, exc.status_code)
        raise
    except Exception:  # the model failed (not the inputs): the client gets a 500
        metrics.predict_done(name, dep_id, 500)
        raise
    metrics.predict_done(name, dep_id, response.status_code)
    return response


_BAD_BODY = ('send JSON {"inputs": [[...], ...]} (numbers), {"items": [...]} (JSON values for the module\'s '
             'decode_request) or a binary tensor frame')


def json_work(body: bytes, signature: dict | None) -> tuple[list[Any] | None, np.ndarray | None]:  # type: ignore[type-arg]
    """A JSON predict body as (items, None) for ``{"items": [...]}`` (values for the module's
    hooks) or (None, rows) for ``{"inputs": [[...], ...]}`` (numbers, checked against the
    run's input signature); a 400 naming the fix otherwise. The route and the shortcut share it."""
    try:
        parsed = json.loads(body)
        items = parsed.get("items")
        inputs = parsed["inputs"] if items is None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ApiError(400, _BAD_BODY, "bad_body") from None
    if items is not None:
        if not isinstance(items, list) or not items:
            raise ApiError(400, '"items" must be a non-empty JSON list, one value per item', "bad_body")
        return items, None
    try:
        return None, check_json_inputs(tensor_codec.from_json(inputs), signature)
    except tensor_codec.CodecError as exc:
        raise ApiError(400, str(exc), "bad_inputs") from None


def json_answer(output: Any, items: list[Any] | None) -> bytes:
    """The JSON reply: the hooks' values for items, the output rows as lists for numbers."""
    return json.dumps({"outputs": output if items is not None else output.tolist()}).encode()


CALLER_LEFT = object()  # what :func:`predict_body` returns when the caller disconnected first


async def predict_body(state: Any, dep_id: str, runtime: Any, signature: dict | None, body: bytes,  # type: ignore[type-arg]
                       binary: bool, observe: Callable[[float], None] | None, receive: Receive
                       ) -> tuple[Any, list[Any] | None]:
    """(the model's output, the JSON items if any) for a predict body; the route and the ASGI
    shortcut (``fast_predict.py``) both answer through this, so they answer alike."""
    items = None
    if binary:
        try:
            array = check_inputs(tensor_codec.decode(body), signature)
        except tensor_codec.CodecError as exc:
            raise ApiError(400, str(exc), "bad_inputs") from None
    else:
        items, array = json_work(body, signature)
    if array is not None:
        state.monitor.sample(dep_id, array)  # drift: one row in N, a counter for most requests
    with serving_errors(runtime.config.timeout_s):
        future = runtime.router.submit(array, observe, items)
    if not await answered_before_leaving(future, receive):
        return CALLER_LEFT, items
    with serving_errors(runtime.config.timeout_s):
        return future.result(), items


async def _answer(request: Request, name: str, dep_id: str, signature: dict | None,  # type: ignore[type-arg]
                  observe: Callable[[float], None] | None) -> Response:
    runtime = runtime_or_503(request, name, dep_id)
    body = await request.body()
    binary = request.headers.get("content-type", "").startswith(tensor_codec.CONTENT_TYPE)
    output, items = await predict_body(request.app.state, dep_id, runtime, signature, body, binary, observe,
                                       request.receive)
    if output is CALLER_LEFT:
        return Response(status_code=499)
    if binary:
        return Response(tensor_codec.encode(output), media_type=tensor_codec.CONTENT_TYPE)
    return Response(json_answer(output, items), media_type="application/json")


__all__ = ["CALLER_LEFT", "answered_before_leaving", "disconnected", "json_answer", "json_work", "overloaded", "predict_body", "predict_target", "ready_runtime", "router",
           "runtime_or_503", "serving_errors", "target_lookup"]
