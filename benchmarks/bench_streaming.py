"""Streams and JSON hooks: aiaas against in-process generation, and against LitServe.

    python benchmarks/bench_streaming.py [--streams 32] [--tokens 64] [--seconds 4] [--parts streams,json]

Needs `pip install -e '.[bench]'` (LitServe) for the JSON row. Everything runs
on this machine on 127.0.0.1 with one model thread on each side (the replica,
the in-process model, the LitServe worker), the same weights and the same
decode/encode code. Streams: a small character transformer (benchmarks/
text_serving_models.py), greedy; time to first piece at concurrency 1 through
``dep.stream`` minus ``next(model.generate(...))`` in this process; pieces/s
with 16 streams in flight through ``dep.astream`` as a ratio of the same
streams generated one after another in this process. JSON: requests/s of one
``{"text": ...}`` item per request at concurrency 64, through ``dep.apredict``
and through LitServe (httpx on aiohttp's pool for both, as the SDK uses), in
``--rounds`` alternating rounds (the load of a shared machine drifts), with the
CPU seconds each server side spent per request (its processes and their children).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import torch
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from bench_serving import closed_loop, free_port  # noqa: E402
from text_serving_models import CharTransformer, TextClassifier  # noqa: E402

HERE = Path(__file__).parent
PROMPT = "def fib(n):"
WORDS = ["great fun", "awful", "a lovely day", "boring and dull", "superb", "poor"]


def local_copy(cls, run, tmp: Path):  # type: ignore[no-untyped-def]
    model = cls()
    model.load_state_dict(torch.load(run.download_checkpoint(tmp / f"{run.id}.pt", kind="weights"),
                                     weights_only=True))
    return model.eval()


def first_piece_ms(start_stream, n: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        pieces = start_stream()
        next(pieces)
        times.append(1000 * (time.perf_counter() - start))
        for _ in pieces:  # run it out: the next one starts on an idle replica
            pass
    return statistics.median(times)


def in_process_rate(model, streams: int, tokens: int) -> float:  # type: ignore[no-untyped-def]
    start, pieces = time.perf_counter(), 0
    with torch.inference_mode():
        for _ in range(streams):
            pieces += sum(1 for _ in model.generate(PROMPT, max_tokens=tokens))
    return pieces / (time.perf_counter() - start)


async def served_rate(dep, streams: int, tokens: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    gate = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with gate:
            return len([p async for p in dep.astream(PROMPT, max_tokens=tokens)])

    start = time.perf_counter()
    try:
        pieces = sum(await asyncio.gather(*(one() for _ in range(streams))))
    finally:
        await dep.aclose()
    return pieces / (time.perf_counter() - start)


def start_litserve(weights: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(HERE / "_litserve_text.py"), str(weights), str(port), "64", "1"],
                            cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "x"}, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"LitServe exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError("LitServe did not start")


async def litserve_rps(port: int, seconds: float) -> tuple[float, float, float, int]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), limits=limits, timeout=30) as http:
        i = 0

        async def call() -> None:
            nonlocal i
            i += 1
            (await http.post(f"http://127.0.0.1:{port}/predict", json={"text": WORDS[i % len(WORDS)]})).raise_for_status()

        return await closed_loop(call, 64, seconds)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants so far."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measured(pid: int, load):  # type: ignore[no-untyped-def]
    """Run ``load()`` (a closed loop): its (req/s, p50 ms, p99 ms, errors), the server side's CPU s
    and this (the client's) process's CPU s: on a shared 2-core machine the client's cost counts too."""
    before, client = tree_cpu_s(pid), time.process_time()
    result = asyncio.run(load())
    return result, tree_cpu_s(pid) - before, time.process_time() - client


def json_rows(ours: list, theirs: list, seconds: float) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    """Totals over the interleaved rounds: each round is (result, server CPU s, client CPU s)."""
    def total(rounds: list) -> tuple[float, float, int, float, float]:  # type: ignore[type-arg]
        rps = statistics.mean(r[0][0] for r in rounds)
        errors = sum(r[0][3] for r in rounds)
        # CPU over the whole loop (warm-up included) per request measured after it: an upper bound, same for both.
        warm = min(1.0, seconds / 4)
        served = sum(r[0][0] * (seconds + warm) for r in rounds)
        cpu_ms, client_ms = 1000 * sum(r[1] for r in rounds) / served, 1000 * sum(r[2] for r in rounds) / served
        return rps, statistics.median(r[0][1] for r in rounds), errors, cpu_ms, client_ms

    a, b = total(ours), total(theirs)
    return [("JSON hooks through aiaas, c=64 (req/s, p50 ms, errors)", f"{a[0]:.0f}, {a[1]:.1f}, {a[2]}"),
            ("JSON hooks through LitServe, c=64 (req/s, p50 ms, errors)", f"{b[0]:.0f}, {b[1]:.1f}, {b[2]}"),
            ("JSON req/s ratio aiaas / LitServe (goal >= 1.2)", f"{a[0] / b[0]:.2f}"),
            ("JSON req/s ratio per round (aiaas/LitServe req/s)",
             ", ".join(f"{x[0][0] / y[0][0]:.2f} ({x[0][0]:.0f}/{y[0][0]:.0f})" for x, y in zip(ours, theirs))),
            ("server CPU ms per request: aiaas (API + replica) / LitServe (all its processes)",
             f"{a[3]:.2f} / {b[3]:.2f}"),
            ("client CPU ms per request: aiaas SDK (dep.apredict) / httpx for LitServe", f"{a[4]:.2f} / {b[4]:.2f}")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    # The JSON rows alternate aiaas and LitServe: on a shared machine the load drifts within a run.
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="streams,json", help="which figures: streams, json or both")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(1)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        backend, url, key = start_backend(tmp / "backend", {"AIAAS_REPLICA_THREADS": "1"})
        litserve: list[subprocess.Popen[bytes]] = []
        try:
            client = aiaas.Client(url, key)
            if "streams" in parts:
                rows += stream_rows(client, tmp, args)
            if "json" in parts:
                rows += json_rows_measured(client, backend, tmp, args, litserve)
        finally:
            for proc in litserve:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            backend.terminate()
            backend.wait(timeout=30)
    print_table(rows)


def stream_rows(client: aiaas.Client, tmp: Path, args: argparse.Namespace) -> list[tuple[str, str]]:
    torch.manual_seed(0)
    run = client.train(CharTransformer(), max_steps=1, accelerator="cpu", name="bench-lm").wait()
    local = local_copy(CharTransformer, run, tmp)
    dep = run.deploy("bench-lm", replicas=1, max_queue=4096)
    list(dep.stream(PROMPT, max_tokens=8))  # warm
    with torch.inference_mode():
        list(local.generate(PROMPT, max_tokens=8))
        here = first_piece_ms(lambda: local.generate(PROMPT, max_tokens=args.tokens), 20)
    served = first_piece_ms(lambda: dep.stream(PROMPT, max_tokens=args.tokens), 20)
    rows = [("first piece in-process, c=1 (ms, median)", f"{here:.2f}"),
            ("first piece through aiaas, c=1 (ms, median)", f"{served:.2f}"),
            ("first piece: aiaas minus in-process (goal < 20 ms)", f"{served - here:.2f}")]
    base = in_process_rate(local, args.streams, args.tokens)
    rate = asyncio.run(served_rate(dep, args.streams, args.tokens, 16))
    rows += [("pieces/s in-process, one stream after another", f"{base:.0f}"),
             ("pieces/s through aiaas, c=16", f"{rate:.0f}"),
             ("pieces/s ratio aiaas / in-process (goal >= 0.8)", f"{rate / base:.2f}")]
    stats = dep.stats()
    rows.append(("dep.stats(): first piece p50 ms / pieces/s", f"{stats.first_piece_p50_ms:.2f} / "
                                                           f"{stats.pieces_per_s:.0f}"))
    return rows


def json_rows_measured(client: aiaas.Client, backend: subprocess.Popen[bytes], tmp: Path, args: argparse.Namespace,
                       started: list[subprocess.Popen[bytes]]) -> list[tuple[str, str]]:
    """The JSON rows; a LitServe process it starts goes into ``started`` (the caller stops it)."""
    run = client.train(TextClassifier(), max_steps=1, accelerator="cpu", name="bench-text").wait()
    weights = run.download_checkpoint(tmp / "text.pt", kind="weights")
    text_dep = run.deploy("bench-text", replicas=1, max_batch_size=64, max_wait_ms=5)

    async def aiaas_rps() -> tuple[float, float, float, int]:
        i = 0

        async def call() -> None:
            nonlocal i
            i += 1
            await text_dep.apredict({"text": WORDS[i % len(WORDS)]})

        try:
            return await closed_loop(call, 64, args.seconds)
        finally:
            await text_dep.aclose()

    if importlib.util.find_spec("litserve") is None:
        ours = measured(backend.pid, aiaas_rps)
        return [("JSON hooks through aiaas, c=64 (req/s, p50 ms, errors)",
                 f"{ours[0][0]:.0f}, {ours[0][1]:.1f}, {ours[0][3]}"),
                ("JSON hooks through LitServe", "skipped: pip install -e '.[bench]'")]
    port = free_port()
    started.append(start_litserve(weights, port))
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(measured(backend.pid, aiaas_rps))
        theirs.append(measured(started[0].pid, lambda: litserve_rps(port, args.seconds)))
    return json_rows(ours, theirs, args.seconds)


if __name__ == "__main__":
    main()
