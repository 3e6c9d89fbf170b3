"""Binary predicts from a key the server already knows take the shortcut in ``fast_predict.py``;
a key's first request goes through the FastAPI route. Both must give the same answers, good and bad."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import torch

from aiaas_sdk import tensor_codec

from ..conftest import wait_until
from .models import Regressor, SlowPredictor

BINARY = {"Content-Type": tensor_codec.CONTENT_TYPE}


@pytest.fixture(scope="module")
def regressor(client):
    torch.manual_seed(0)
    run = client.train(Regressor(), max_epochs=1, name="fast-path").wait()
    dep = run.deploy("fast", replicas=1, max_batch_size=8, max_wait_ms=2)
    yield dep
    dep.delete()


def _post(backend, key: str, name: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{backend.url}/v1/deployments/{name}/predict", content=body,
                      headers={**BINARY, "Authorization": f"Bearer {key}"}, timeout=30)


def _same(first: httpx.Response, second: httpx.Response) -> None:
    assert first.status_code == second.status_code
    assert first.headers["content-type"] == second.headers["content-type"]
    assert first.headers.get("retry-after") == second.headers.get("retry-after")
    if first.headers["content-type"].startswith("application/json"):
        assert first.json() == second.json()
    else:
        assert np.array_equal(tensor_codec.decode(first.content), tensor_codec.decode(second.content))


FRAMES = {
    "good": tensor_codec.encode(np.ones((3, 8), dtype=np.float32)),
    "float64 is cast": tensor_codec.encode(np.ones((2, 8), dtype=np.float64)),
    "wrong shape": tensor_codec.encode(np.ones((2, 5), dtype=np.float32)),
    "one row without its batch": tensor_codec.encode(np.ones(8, dtype=np.float32)),
    "wrong dtype": tensor_codec.encode(np.ones((2, 8), dtype=np.bool_)),
    "empty batch": tensor_codec.encode(np.ones((0, 8), dtype=np.float32)),
    "not a frame": b"\x00garbage",
    "truncated frame": tensor_codec.encode(np.ones((4, 8), dtype=np.float32))[:-7],
}


@pytest.mark.parametrize("case", sorted(FRAMES))
def test_route_and_shortcut_answer_alike(backend, regressor, case):
    body = FRAMES[case]
    # A deployment key's first request cannot be in the server's cache: the route answers it.
    cold = _post(backend, regressor.create_key(), "fast", body)
    warm_key = regressor.create_key()
    _post(backend, warm_key, "fast", FRAMES["good"]).raise_for_status()  # now the server knows this key
    warm = _post(backend, warm_key, "fast", body)
    _same(cold, warm)
    if case in ("good", "float64 is cast"):
        assert warm.status_code == 200
    else:
        assert warm.status_code == 400 and warm.json()["code"] in {"bad_shape", "bad_dtype", "empty_batch",
                                                                    "bad_inputs"}


ROW = [0.5] * 8
JSON_BODIES = {
    "items": {"items": [ROW, ROW]},
    "an item the model refuses": {"items": [ROW, [1.0, 2.0]]},
    "items not a list": {"items": {"a": ROW}},
    "empty items": {"items": []},
    "numbers": {"inputs": [ROW, ROW, ROW]},
    "numbers of the wrong shape": {"inputs": [[1.0, 2.0]]},
    "neither": {"rows": [ROW]},
    "not JSON": b"{not json",
}


@pytest.mark.parametrize("case", sorted(JSON_BODIES))
def test_json_route_and_shortcut_answer_alike(backend, regressor, case):
    """JSON bodies take the shortcut too (items through the hooks, numbers): the same answers."""
    body = JSON_BODIES[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    def post(key: str, content: bytes) -> httpx.Response:
        return httpx.post(f"{backend.url}/v1/deployments/fast/predict", content=content, timeout=30,
                          headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})

    cold = post(regressor.create_key(), content)
    warm_key = regressor.create_key()
    post(warm_key, json.dumps(JSON_BODIES["items"]).encode()).raise_for_status()
    warm = post(warm_key, content)
    _same(cold, warm)
    assert warm.headers["content-length"] == str(len(warm.content))
    if case in ("items", "numbers"):
        assert warm.status_code == 200 and len(warm.json()["outputs"]) == len(body["items" if case == "items" else "inputs"])
    else:
        assert warm.status_code == 400, warm.text
        if case == "an item the model refuses":
            assert warm.json()["code"] == "bad_items" and "item 1" in warm.json()["detail"]


def test_shortcut_keeps_timeouts_backpressure_and_dropping_work(backend, client):
    run = client.train(SlowPredictor(predict_sleep=0.3), max_epochs=1, name="fast-slow").wait()
    dep = run.deploy("fast-slow", replicas=1, max_batch_size=1, max_wait_ms=0, max_queue=2, timeout_s=0.5)
    try:
        key = dep.create_key()
        one = tensor_codec.encode(np.zeros((1, 8), dtype=np.float32))
        assert _post(backend, key, "fast-slow", one).status_code == 200  # the route; the key is now known

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(headers={**BINARY, "Authorization": f"Bearer {key}"}) as http:
                return await asyncio.gather(*(http.post(f"{backend.url}/v1/deployments/fast-slow/predict",
                                                        content=one, timeout=30) for _ in range(8)))

        answers = asyncio.run(burst())
        codes = sorted(r.status_code for r in answers)
        assert 429 in codes and 504 in codes, codes  # a queue of 2 and 0.3 s per request within 0.5 s
        overloaded = next(r for r in answers if r.status_code == 429)
        assert overloaded.headers["retry-after"] == "1" and "queue is full" in overloaded.json()["detail"]
        late = next(r for r in answers if r.status_code == 504)
        assert "timeout" in json.loads(late.content)["detail"]

        wait_until(lambda: dep.stats().queue_depth == 0, timeout=30, what="the queue to drain")
        before = dep.stats()

        async def leave() -> None:
            async with httpx.AsyncClient(headers={**BINARY, "Authorization": f"Bearer {key}"}) as http:
                async def one_leaves() -> None:
                    try:
                        await http.post(f"{backend.url}/v1/deployments/fast-slow/predict", content=one, timeout=0.1)
                    except httpx.TimeoutException:
                        pass
                await asyncio.gather(*(one_leaves() for _ in range(2)))

        asyncio.run(leave())
        after = wait_until(lambda: (st := dep.stats()).dropped - before.dropped >= 1 and st.queue_depth == 0 and st,
                           timeout=30, what="the work of callers that left to be dropped")
        assert after.batches - before.batches <= 1  # only what the replica had already started
    finally:
        dep.delete()


def test_a_revoked_key_stops_working_on_the_shortcut(backend, regressor):
    key = regressor.create_key()
    assert _post(backend, key, "fast", FRAMES["good"]).status_code == 200
    assert _post(backend, key, "fast", FRAMES["good"]).status_code == 200  # the shortcut
    with httpx.Client(base_url=backend.url, headers={"Authorization": f"Bearer {backend.key}"}) as owner:
        listed = owner.get("/v1/keys").raise_for_status().json()
        mine = next(k for k in listed["data"] if key.startswith(k["prefix"]))
        owner.delete(f"/v1/keys/{mine['id']}").raise_for_status()
    refused = _post(backend, key, "fast", FRAMES["good"])
    assert refused.status_code == 401, refused.text
