"""Serving text: JSON values through a module's hooks, streamed generation, the OpenAI-compatible route.

Real server, real replica processes, called over HTTP by the SDK, httpx and the `openai` client.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
import torch

import aiaas

from ..conftest import wait_until
from .text_models import NEGATIVE, POSITIVE, TextClassifier, TinyLM


@pytest.fixture(scope="module")
def classifier(client, tmp_path_factory):
    torch.manual_seed(0)
    run = client.train(TextClassifier(), max_epochs=15, name="sentiment").wait()
    local = TextClassifier.load_from_checkpoint(
        run.download_checkpoint(tmp_path_factory.mktemp("ckpt") / "c.ckpt")).eval()
    dep = run.deploy("sentiment", max_batch_size=32, max_wait_ms=20)
    yield dep, local
    dep.delete()


@pytest.fixture(scope="module")
def lm(client, tmp_path_factory):
    torch.manual_seed(0)
    run = client.train(TinyLM(), max_epochs=20, name="tiny-lm").wait()
    local = TinyLM.load_from_checkpoint(run.download_checkpoint(tmp_path_factory.mktemp("ckpt") / "lm.ckpt")).eval()
    dep = run.deploy("tiny-lm", max_queue=2)
    yield run, dep, local
    dep.delete()


def _local_answer(local, item):
    with torch.inference_mode():
        return local.encode_response(local(local.decode_request(item).unsqueeze(0))[0])


def _local_completion(local, prompt, max_tokens):
    with torch.inference_mode():
        return "".join(local.generate(prompt, max_tokens=max_tokens))


# -- JSON values through the hooks ---------------------------------------------------------------
def test_json_values_in_and_out_sync_and_async_batched(classifier):
    dep, local = classifier
    answers = dep.predict([{"text": "great"}, {"text": "awful"}])
    assert [a["label"] for a in answers] == ["positive", "negative"]
    assert answers == [_local_answer(local, {"text": "great"}), _local_answer(local, {"text": "awful"})]
    assert dep.predict({"text": "nice"}) == _local_answer(local, {"text": "nice"})  # one value in, one out

    items = [{"text": w} for w in (POSITIVE + NEGATIVE) * 12]

    async def many():
        out = await dep.apredict_many(items, concurrency=64)
        await dep.aclose()
        return out

    before = dep.stats()
    answers = asyncio.run(many())
    assert answers == [_local_answer(local, item) for item in items]  # order kept, same as alone
    stats = dep.stats()
    assert stats.requests - before.requests == len(items) and stats.errors == before.errors
    assert stats.batches - before.batches < len(items)  # items shared batches


def test_a_failing_item_fails_alone_and_names_its_index(classifier, backend):
    dep, local = classifier
    with pytest.raises(aiaas.BadRequest) as caught:
        dep.predict([{"text": "good"}, {"txt": "typo"}, {"text": "bad"}])
    message = str(caught.value)
    assert "item 1" in message and "decode_request raised KeyError" in message and "'text'" in message
    # Neighbours in the same batch are answered: a bad request and good ones sent at once.
    key = backend.key

    def call(body):
        return httpx.post(f"{backend.url}/v1/deployments/sentiment/predict", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)

    bodies = [{"items": [{"text": "great"}]}, {"items": [{"text": 3}]}, {"items": [{"text": "awful"}]}] * 5
    results: list[httpx.Response | None] = [None] * len(bodies)

    def send(i):
        results[i] = call(bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for body, resp in zip(bodies, results):
        if body["items"][0]["text"] == 3:
            assert resp.status_code == 400 and resp.json()["code"] == "bad_items"
            assert "item 0: decode_request raised" in resp.json()["detail"]
        else:
            assert resp.status_code == 200, resp.text
            assert resp.json()["outputs"] == [_local_answer(local, body["items"][0])]
    bad = call({"items": "not a list"})
    assert bad.status_code == 400 and "items" in bad.json()["detail"]
    assert dep.predict([{"text": "superb"}])[0]["label"] == "positive"  # the replica keeps serving


def test_tensor_deployments_are_unchanged_for_a_hooks_module(classifier):
    dep, local = classifier
    ids = torch.stack([torch.arange(16) % 100, torch.arange(16)])
    out = dep.predict(ids)  # the binary tensor frame skips the hooks: the fast path
    assert isinstance(out, torch.Tensor) and torch.allclose(out, local(ids).detach(), atol=1e-5)


# -- streaming -------------------------------------------------------------------------------------
def test_stream_sync_and_async_equal_local_generation(lm):
    _, dep, local = lm
    pieces = list(dep.stream("def fib(n):", max_tokens=40))
    assert len(pieces) == 40 and "".join(pieces) == _local_completion(local, "def fib(n):", 40)

    async def collect():
        out = [p async for p in dep.astream("return", max_tokens=25)]
        await dep.aclose()
        return out

    assert "".join(asyncio.run(collect())) == _local_completion(local, "return", 25)
    stats = dep.stats()
    assert stats.streams >= 2 and stats.first_piece_p50_ms is not None and stats.first_piece_p50_ms > 0
    assert stats.pieces_per_s is not None and stats.pieces_per_s > 0


def test_stream_refusals_are_4xx_and_the_replica_keeps_serving(lm, classifier):
    _, dep, local = lm
    with pytest.raises(aiaas.BadRequest, match="context is 64"):
        list(dep.stream("x" * 100, max_tokens=5))
    with pytest.raises(aiaas.BadRequest, match="max_tokens must be a whole number from 1 to 512"):
        list(dep.stream("def", max_tokens=1000))
    with pytest.raises(aiaas.InvalidInput, match="max_tokens"):
        list(dep.stream("def", max_tokens=0))
    with pytest.raises(aiaas.BadRequest, match="no generator method") as caught:
        list(classifier[0].stream("hello"))
    assert caught.value.code == "not_generative"
    assert "".join(dep.stream("def", max_tokens=10)) == _local_completion(local, "def", 10)


def test_a_caller_that_leaves_stops_the_generation_within_one_step(lm, backend):
    _, dep, local = lm
    log = backend.data_dir / "replicas.log"
    prompt = "slow:leave"

    def steps():
        return sum(1 for line in log.read_text().splitlines() if line.startswith(f"generate[{prompt}] step"))

    pieces = dep.stream(prompt, max_tokens=200)
    assert [next(pieces) for _ in range(3)]
    pieces.close()  # leaves the loop: the connection closes
    at_leave = steps()
    wait_until(lambda: dep.stats().streams_cancelled >= 1, timeout=10, what="the stream to be cancelled")
    time.sleep(1.0)  # four more steps' time, had it kept going
    assert steps() - at_leave <= 1, log.read_text()[-2000:]
    assert "".join(dep.stream("def", max_tokens=5)) == _local_completion(local, "def", 5)


def test_streams_count_in_the_queue(lm, backend):
    _, dep, _ = lm  # one replica, max_queue=2
    headers = {"Authorization": f"Bearer {backend.key}"}

    async def scenario():
        async with httpx.AsyncClient(base_url=backend.url, headers=headers, timeout=30) as http:
            async def open_stream():
                return await http.send(http.build_request(
                    "POST", "/v1/deployments/tiny-lm/stream", json={"prompt": "slow:q", "max_tokens": 30}),
                    stream=True)

            async def stats():
                return (await http.get("/v1/deployments/tiny-lm/stats")).json()

            first = await open_stream()  # holds the only replica
            assert first.status_code == 200
            # One waits in the batcher for the replica, two fill the queue: sent one at a time,
            # each once the one before is counted, so the batcher has taken the first off the queue.
            waiting = []
            for _ in range(3):
                before = (await stats())["requests"]
                waiting.append(asyncio.ensure_future(open_stream()))
                for _ in range(300):
                    if (await stats())["requests"] > before:
                        break
                    await asyncio.sleep(0.02)
            assert (await stats())["queue_depth"] == 2
            assert not any(t.done() for t in waiting)
            refused = await http.post("/v1/deployments/tiny-lm/stream", json={"prompt": "def", "max_tokens": 3})
            assert refused.status_code == 429 and refused.json()["code"] == "overloaded"
            await first.aclose()
            for task in waiting:
                resp = await task
                assert resp.status_code == 200
                await resp.aclose()

    asyncio.run(scenario())
    wait_until(lambda: dep.stats().queue_depth == 0, timeout=30, what="the queue to drain")
    assert len(list(dep.stream("def", max_tokens=3))) == 3


# -- the OpenAI-compatible route ---------------------------------------------------------------------
def test_openai_client_streams_and_completes(lm, backend, classifier):
    openai = pytest.importorskip("openai", reason="the openai client is in the dev extra")
    _, dep, local = lm
    api = openai.OpenAI(base_url=f"{backend.url}/v1/openai/tiny-lm", api_key=backend.key)
    chunks = list(api.completions.create(model="tiny-lm", prompt="def ", stream=True, max_tokens=20))
    text = "".join(c.choices[0].text for c in chunks)
    assert text == _local_completion(local, "def ", 20)
    assert chunks[-1].choices[0].finish_reason == "length"
    done = api.completions.create(model="tiny-lm", prompt="def ", max_tokens=12)
    assert done.choices[0].text == _local_completion(local, "def ", 12) and done.usage.completion_tokens == 12
    assert [m.id for m in api.models.list()] == ["tiny-lm"]

    raw = httpx.post(f"{backend.url}/v1/openai/tiny-lm/completions", timeout=30,
                     headers={"Authorization": f"Bearer {backend.key}"},
                     json={"model": "tiny-lm", "prompt": "def", "max_tokens": 3, "stream": True})
    assert raw.text.rstrip().endswith("data: [DONE]")
    assert len([line for line in raw.text.splitlines() if line.startswith("data: {")]) == 4  # 3 pieces + finish

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{backend.url}/v1/openai/tiny-lm", api_key="wrong").models.list()
    other = openai.OpenAI(base_url=f"{backend.url}/v1/openai/sentiment", api_key=backend.key)
    with pytest.raises(openai.BadRequestError, match="no generator method"):
        other.completions.create(model="sentiment", prompt="def ", max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="context"):
        api.completions.create(model="tiny-lm", prompt="y" * 80, max_tokens=3)
