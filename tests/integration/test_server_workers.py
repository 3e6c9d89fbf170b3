"""``--workers 2``: a front process shares the port with the primary (backend/aiaas_backend/fronts).

Every test opens fresh connections until both processes have answered (the kernel spreads
connections over the SO_REUSEPORT sockets; a front's answers carry ``x-aiaas-front``), and
checks that what the primary owns (batching, the queue bound, stats, rolling updates, the
rate limit, events) holds for the requests the front took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
import torch

from aiaas_sdk import tensor_codec

from ..conftest import Backend, wait_until
from .models import Regressor, SlowPredictor

BINARY = {"Content-Type": tensor_codec.CONTENT_TYPE}
FRONT = "x-aiaas-front"


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("workers"), slots=2, env={"AIAAS_SERVER_WORKERS": "2"}).start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def client(backend):
    return backend.client()


@pytest.fixture(scope="module")
def versions(client):
    torch.manual_seed(0)
    v1 = client.train(Regressor(), max_epochs=1, name="workers-v1").wait()
    v2 = client.train(Regressor(lr=0.5), max_epochs=2, name="workers-v2").wait()
    return v1, v2


@pytest.fixture(scope="module")
def deployment(versions):
    dep = versions[0].deploy("workers", replicas=1, max_batch_size=32, max_wait_ms=20)
    yield dep
    dep.delete()


def _fronts(backend) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(backend.proc.pid).children():
        try:
            if "aiaas_backend.fronts.front" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:  # a killed front the primary has not reaped yet (a zombie), or one gone
            pass
    return found


def _wait_for_fronts(backend, count: int) -> None:
    """Until ``count`` front processes run and one of them answers (it listens once started)."""
    wait_until(lambda: len(_fronts(backend)) == count, timeout=60, what=f"{count} front processes")
    wait_until(lambda: FRONT in httpx.get(f"{backend.url}/healthz").headers, timeout=60,
               what="a front to answer")


def _post(backend, key: str, name: str, body: bytes, headers: dict | None = None) -> httpx.Response:
    """One request on a connection of its own (so the kernel picks a process for it)."""
    return httpx.post(f"{backend.url}/v1/deployments/{name}/predict", content=body, timeout=30,
                      headers={**BINARY, "Authorization": f"Bearer {key}", **(headers or {})})


def _from_both(send, attempts: int = 200) -> tuple[httpx.Response, httpx.Response]:
    """An answer from the primary and one from the front to the same request."""
    seen: dict[bool, httpx.Response] = {}
    for _ in range(attempts):
        response = send()
        seen.setdefault(FRONT in response.headers, response)
        if len(seen) == 2:
            return seen[False], seen[True]
    raise AssertionError(f"only {'the front' if True in seen else 'the primary'} answered in {attempts} connections")


async def _blast(backend, key: str, name: str, bodies: list[bytes]) -> list[httpx.Response]:
    """All at once, one connection each."""
    async def one(body: bytes) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.post(f"{backend.url}/v1/deployments/{name}/predict", content=body,
                                   headers={**BINARY, "Authorization": f"Bearer {key}"})
    return await asyncio.gather(*(one(b) for b in bodies))


async def _gets(url: str, key: str, count: int) -> list[httpx.Response]:
    async def one() -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.get(url, headers={"Authorization": f"Bearer {key}"})
    return await asyncio.gather(*(one() for _ in range(count)))


def test_a_front_runs_and_server_json_names_the_primary(backend):
    info = json.loads((backend.data_dir / "server.json").read_text())
    assert info["pid"] == backend.proc.pid
    _wait_for_fronts(backend, 1)
    status = subprocess.run([sys.executable, "-m", "aiaas_backend", "local", "status", "--data-dir",
                             str(backend.data_dir)], capture_output=True, text=True, env=backend.env, check=True)
    assert "server front" in status.stdout and str(_fronts(backend)[0].pid) in status.stdout, status.stdout


def test_both_processes_answer_predicts_alike(backend, deployment):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    primary, front = _from_both(lambda: _post(backend, backend.key, "workers", tensor_codec.encode(x)))
    assert primary.status_code == front.status_code == 200
    assert front.headers["content-type"] == tensor_codec.CONTENT_TYPE
    assert np.array_equal(tensor_codec.decode(primary.content), tensor_codec.decode(front.content))
    assert int(front.headers[FRONT]) in {p.pid for p in _fronts(backend)}
    # JSON numbers and items too.
    for body in ({"inputs": x.tolist()}, {"items": x.tolist()}):
        primary, front = _from_both(lambda body=body: _post(backend, backend.key, "workers", json.dumps(body).encode(),
                                                            {"Content-Type": "application/json"}))
        assert primary.status_code == front.status_code == 200, front.text
        assert primary.json() == front.json() and primary.content == front.content


FRAMES = {
    "wrong shape": tensor_codec.encode(np.ones((2, 5), dtype=np.float32)),
    "wrong dtype": tensor_codec.encode(np.ones((2, 8), dtype=np.bool_)),
    "not a frame": b"\x00garbage",
    "truncated frame": tensor_codec.encode(np.ones((4, 8), dtype=np.float32))[:-7],
    "not JSON": b"{not json",
}


@pytest.mark.parametrize("case", sorted(FRAMES))
def test_a_bad_body_gets_the_same_400_from_either_process(backend, deployment, case):
    headers = {"Content-Type": "application/json"} if case == "not JSON" else {}
    primary, front = _from_both(lambda: _post(backend, backend.key, "workers", FRAMES[case], headers))
    assert primary.status_code == front.status_code == 400
    assert primary.json() == front.json() and primary.headers["content-type"] == front.headers["content-type"]


def test_batches_form_across_processes_and_stats_count_every_request(backend, deployment):
    before = deployment.stats()
    x = tensor_codec.encode(np.ones((1, 8), dtype=np.float32))
    answers = asyncio.run(_blast(backend, backend.key, "workers", [x] * 96))
    assert all(r.status_code == 200 for r in answers), {r.status_code for r in answers}
    assert {FRONT in r.headers for r in answers} == {True, False}  # both processes took connections
    after = deployment.stats()
    assert after.requests - before.requests == 96
    new_batches = {size: n - before.batch_sizes.get(size, 0) for size, n in after.batch_sizes.items()}
    assert any(size > 1 and n > 0 for size, n in new_batches.items()), new_batches
    assert sum(size * n for size, n in new_batches.items()) == 96


def test_backpressure_429_comes_from_the_primary_queue_through_the_front(backend, client):
    run = client.train(SlowPredictor(predict_sleep=0.2), max_epochs=1, name="workers-slow").wait()
    dep = run.deploy("workers-slow", replicas=1, max_batch_size=1, max_wait_ms=0, max_queue=2)
    try:
        one = tensor_codec.encode(np.zeros((1, 8), dtype=np.float32))
        answers = asyncio.run(_blast(backend, backend.key, "workers-slow", [one] * 40))
        refused = [r for r in answers if r.status_code == 429]
        assert any(FRONT in r.headers for r in refused) and any(FRONT not in r.headers for r in refused)
        via_front = next(r for r in refused if FRONT in r.headers)
        via_primary = next(r for r in refused if FRONT not in r.headers)
        assert via_front.json() == via_primary.json() and via_front.headers["retry-after"] == "1"
        assert dep.stats().rejected == len(refused)

        # Callers that leave: their queued work is dropped whichever process took them (the front
        # learns it from its connection, then tells the primary). Three callers a round, one
        # connection each: one batch starts, two wait; with 0.2 s a batch and 0.1 s patience,
        # each round runs at most the batch already started, unless a front computed its own.
        rounds = 4
        before = dep.stats()

        async def leave() -> None:
            async def one_leaves() -> None:
                async with httpx.AsyncClient(headers={**BINARY, "Authorization": f"Bearer {backend.key}"}) as http:
                    try:
                        await http.post(f"{backend.url}/v1/deployments/workers-slow/predict", content=one,
                                        timeout=httpx.Timeout(5, read=0.1))
                    except httpx.TimeoutException:
                        pass
            await asyncio.gather(*(one_leaves() for _ in range(3)))

        for _ in range(rounds):
            wait_until(lambda: dep.stats().queue_depth == 0, timeout=30, what="the queue to drain")
            asyncio.run(leave())
        after = wait_until(lambda: (st := dep.stats()).dropped - before.dropped >= rounds and st.queue_depth == 0
                           and st, timeout=30, what="the work of callers that left to be dropped")
        assert after.batches - before.batches <= rounds, (before, after)
    finally:
        dep.delete()


def test_a_predict_declaring_a_body_over_the_limit_gets_413_from_either_process(backend, deployment):
    """The front checks a predict's declared size itself (its other requests go through BodySizeLimit)."""
    host, port = backend.url.removeprefix("http://").rsplit(":", 1)
    request = (f"POST /v1/deployments/workers/predict HTTP/1.1\r\nHost: {host}\r\n"
               f"Authorization: Bearer {backend.key}\r\nContent-Type: {tensor_codec.CONTENT_TYPE}\r\n"
               f"Content-Length: {10**12}\r\n\r\n").encode()

    def send() -> httpx.Response:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(request)
            raw = b""
            while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < _length(raw):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return httpx.Response(int(lines[0].split()[1]), headers=headers, content=body)

    primary, front = _from_both(send)
    assert primary.status_code == front.status_code == 413
    assert primary.json() == front.json() and front.json()["code"] == "payload_too_large"


def _length(raw: bytes) -> int:
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b": ")
        if name.lower() == b"content-length":
            return int(value)
    return 0


def test_a_rolling_update_under_load_through_both_processes_drops_nothing(backend, deployment, versions):
    v1, v2 = versions
    answers: list[httpx.Response] = []
    frame = tensor_codec.encode(np.ones((2, 8), dtype=np.float32))
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            answers.extend(asyncio.run(_blast(backend, backend.key, "workers", [frame] * 16)))

    def answer() -> np.ndarray:
        return tensor_codec.decode(_post(backend, backend.key, "workers", frame).raise_for_status().content)

    before = deployment.stats().requests
    first = answer()
    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_until(lambda: len(answers) >= 32, timeout=60, what="the load to be flowing")
        deployment.update(v2.id)
        assert deployment.run_id == v2.id
        second = answer()
        deployment.rollback()
        after = len(answers)  # the load goes on across the rollback
        wait_until(lambda: len(answers) >= after + 32, timeout=60, what="answers after the rollback")
    finally:
        done.set()
        loader.join()
    assert deployment.run_id == v1.id
    assert {r.status_code for r in answers} == {200}
    assert {FRONT in r.headers for r in answers} == {True, False}
    assert not np.allclose(first, second)
    for r in answers:  # each answer came from one of the two versions
        output = tensor_codec.decode(r.content)
        assert np.allclose(output, first, atol=1e-5) or np.allclose(output, second, atol=1e-5)
    assert deployment.stats().requests - before >= len(answers)


def test_events_and_training_work_through_the_front(backend, client):
    run = client.train(Regressor(step_sleep=0.05), max_epochs=3, name="workers-events")

    def stream() -> httpx.Response:
        with httpx.stream("GET", f"{backend.url}/v1/runs/{run.id}/events", timeout=120,
                          headers={"Authorization": f"Bearer {backend.key}"}) as response:
            response.read()
            return response

    primary, front = _from_both(stream, attempts=50)
    for response in (primary, front):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line.split(": ", 1)[1]) for line in response.text.splitlines()
                  if line.startswith("data: ") and line != "data: {}"]
        kinds = [event.get("kind") for event in events]
        assert "metric" in kinds and kinds[-1] == "status" and events[-1]["data"]["status"] == "succeeded", kinds
    assert primary.text == front.text
    assert run.wait().status == "succeeded"


def test_a_killed_front_is_restarted_and_the_primary_keeps_serving(backend, deployment):
    wait_until(lambda: len(_fronts(backend)) == 1, timeout=60, what="one front process")
    victim = _fronts(backend)[0].pid
    os.kill(victim, signal.SIGKILL)
    x = tensor_codec.encode(np.ones((1, 8), dtype=np.float32))
    assert _post(backend, backend.key, "workers", x).status_code == 200  # the primary alone, meanwhile
    wait_until(lambda: [p.pid for p in _fronts(backend)] not in ([], [victim]), timeout=60,
               what="a new front process")
    _wait_for_fronts(backend, 1)  # the new process listens once it has imported its stack
    _, front = _from_both(lambda: _post(backend, backend.key, "workers", x))
    assert front.status_code == 200 and int(front.headers[FRONT]) != victim


def test_the_rate_limit_is_one_limit_across_processes(make_backend):
    rate, burst = 5.0, 30
    backend = make_backend(AIAAS_SERVER_WORKERS="2", AIAAS_RATE_REQUESTS_PER_S=str(rate), AIAAS_RATE_BURST=str(burst))
    _wait_for_fronts(backend, 1)
    run = backend.client().train(Regressor(), max_epochs=1, name="workers-rate").wait()
    dep = run.deploy("workers-rate", replicas=1)
    # Routes the front proxies, then predicts it answers itself: a fresh key (a full bucket) for each.
    for kind in ("proxied", "predict"):
        key = dep.create_key()
        one = tensor_codec.encode(np.zeros((1, 8), dtype=np.float32))
        started = time.monotonic()
        if kind == "proxied":
            answers = asyncio.run(_gets(f"{backend.url}/v1/deployments/workers-rate", key, 120))
        else:
            answers = asyncio.run(_blast(backend, key, "workers-rate", [one] * 120))
        elapsed = time.monotonic() - started
        assert {FRONT in r.headers for r in answers} == {True, False}, kind
        granted = sum(r.status_code == 200 for r in answers)
        # One bucket for the key across processes: two would grant about twice the burst.
        assert burst <= granted <= burst + rate * elapsed + 1, (kind, granted, elapsed)
        refused = [r for r in answers if r.status_code == 429]
        assert {r.json()["code"] for r in refused} == {"rate_limited"}, kind
        assert any(FRONT in r.headers for r in refused), kind
        assert refused[0].headers["retry-after"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_the_fronts_end_with_the_primary(make_backend, sig):
    backend = make_backend(trains=False, AIAAS_SERVER_WORKERS="3")
    _wait_for_fronts(backend, 2)
    fronts = _fronts(backend)
    backend.stop(sig)
    gone, alive = psutil.wait_procs(fronts, timeout=30)
    assert not alive and len(gone) == 2
