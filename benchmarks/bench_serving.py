"""Serving throughput and latency: aiaas against the in-process ceiling, plain FastAPI, LitServe and Ray Serve.

    python benchmarks/bench_serving.py [--seconds 4] [--concurrency 1,16,64,256] [--models mlp,resnet18]
                                       [--baselines fastapi,litserve,ray] [--rounds 3]

Needs `pip install litserve` for the LitServe column and `ray[serve]` for Ray
Serve's (a column whose server does not start in time is skipped with the reason).
Everything runs on this machine on 127.0.0.1, one model worker each (a replica, a
LitServe worker, a Ray Serve replica, the FastAPI process itself), each with torch
on as many threads as the aiaas replica and the same OpenMP wait policy. The batching
servers batch as aiaas does (at most 64 rows, 2 ms wait). Each request is one row; the
load is closed-loop at each concurrency for ``--seconds`` after a warm-up. aiaas is called through the
SDK's async client (its binary tensor frame), and again with the baselines' own client code
(the "raw http" row, the same frame); the baselines get the same float32
bytes, base64 in a small JSON object (see ``_serve_baselines.py``), through the
same connection pool the SDK uses (httpx's API on aiohttp's pool: httpx's own pool
collapses above ~16 requests in flight, which would measure the client, not the servers).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import httpx
import numpy as np

# The in-process ceiling runs with the OpenMP policy every server gets (SAME_ENV below); it only
# takes effect if set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from aiaas_sdk import tensor_codec  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from serving_models import MODELS  # noqa: E402

HERE = Path(__file__).parent
MAX_BATCH = 64
THREADS = os.cpu_count() or 1  # what the aiaas replica gets when it is the deployment's only one
# What aiaas's replicas run with (OpenMP threads that sleep between ops, serving/local.py), given
# to every baseline's model process too: the comparison is of servers, not of OpenMP settings.
SAME_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
# Ray starts a cluster, its HTTP proxy and a replica actor: slow on a small busy machine, but bounded.
SECONDS = 4.0  # per load point (--seconds)
START_S = {"fastapi": 60.0, "litserve": 90.0, "ray": 240.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def closed_loop(call, concurrency: int, seconds: float) -> tuple[float, float, float, int]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    errors = 0
    warm_until = time.perf_counter() + min(1.0, seconds / 4)
    stop = warm_until + seconds

    async def worker() -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop:
            try:
                await call()
            except Exception:  # noqa: BLE001 - counted, reported in the table
                errors += 1
                continue
            if now >= warm_until:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")
    return len(latencies) / seconds, 1000 * statistics.median(ordered or [float("nan")]), 1000 * p99, errors


def rows_per_s(model: torch.nn.Module, shape: tuple[int, ...], batch: int, seconds: float) -> float:
    """Rows/s of model(x) in this process at one batch size."""
    x = torch.rand(batch, *shape)
    with torch.inference_mode():
        model(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += 1
    return n * batch / (time.perf_counter() - start)


def ceiling(model: torch.nn.Module, shape: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Rows/s of model(x) in this process, per batch size up to the servers' largest."""
    return {batch: rows_per_s(model, shape, batch, seconds / 2) for batch in (1, 8, 16, 32, MAX_BATCH)}


Point = tuple[float, float, float, int]  # req/s, p50 ms, p99 ms, errors


def median_point(runs: list[Point]) -> Point:
    """The round with the median requests/s (its latencies with it)."""
    return sorted(runs)[len(runs) // 2]


async def http_load(c: int, url: str, request: dict[str, Any]) -> Point:
    """Closed-loop POSTs of one body: the client every baseline gets (and aiaas's raw row)."""
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=60) as http:
        async def call() -> None:
            resp = await http.post(url, **request)
            resp.raise_for_status()
        return await closed_loop(call, c, SECONDS)


def b64_body(x: np.ndarray) -> dict[str, object]:
    """The baselines' request: the same float32 bytes as aiaas's frame, base64 in JSON."""
    return {"b64": base64.b64encode(np.ascontiguousarray(x, dtype=np.float32).tobytes()).decode(),
            "shape": list(x.shape)}


def start_baseline(kind: str, model: str, weights: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    # Its own process group: LitServe spawns workers that must go down with it.
    proc = subprocess.Popen([sys.executable, str(HERE / "_serve_baselines.py"), kind, model, str(weights), str(port),
                             str(MAX_BATCH), str(THREADS)], cwd=HERE, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **SAME_ENV})
    body = b64_body(np.zeros((1, *MODELS[model].input_shape), dtype=np.float32))
    deadline = time.monotonic() + START_S[kind]
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{kind} server exited with {proc.returncode}: {tail[0]}")
        time.sleep(0.2)
    stop_baseline(proc)
    raise TimeoutError(f"{kind} server did not answer within {START_S[kind]:.0f} s")


def stop_baseline(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM first (the Ray baseline shuts its cluster down on it), then the whole group."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--models", default="mlp,resnet18")
    parser.add_argument("--baselines", default="fastapi,litserve,ray")
    parser.add_argument("--rounds", type=int, default=3, help="every system measured once per round")
    args = parser.parse_args()
    global SECONDS
    SECONDS = args.seconds
    baselines = [b for b in args.baselines.split(",") if b]
    load_before = os.getloadavg()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[tuple[str, ...]] = []
    summary: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        backend, url, key = start_backend(Path(tmp) / "backend")
        try:
            client = aiaas.Client(url, key)
            for name in args.models.split(","):
                torch.manual_seed(0)
                run = client.train(MODELS[name](), max_steps=1, accelerator="cpu", name=f"bench-{name}").wait()
                weights = run.download_checkpoint(Path(tmp) / f"{name}.pt", kind="weights")
                local = MODELS[name]()
                local.load_state_dict(torch.load(weights, weights_only=True))
                local.eval()
                shape = MODELS[name].input_shape
                time.sleep(6)  # the backend's next warm worker imports torch meanwhile: let it finish
                ceilings = ceiling(local, shape, args.seconds)
                top = max(ceilings.values())  # the best batch size: the strictest ceiling
                dep = run.deploy(f"bench-{name}", replicas=1, max_batch_size=MAX_BATCH, max_wait_ms=2)
                x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
                body = b64_body(x)
                frame = tensor_codec.encode(x)

                async def aiaas_load(c: int) -> Point:
                    try:
                        return await closed_loop(lambda: dep.apredict(x), c, args.seconds)
                    finally:
                        await dep.aclose()

                # The same endpoint through the baselines' own client code: what the server costs
                # without the SDK's work per call (encoding, retries, error mapping) on the client side.
                loads: dict[str, Callable[[int], Coroutine[Any, Any, Point]]] = {
                    "aiaas": aiaas_load,
                    "aiaas (raw http)": partial(http_load, url=f"{url}/v1/deployments/bench-{name}/predict",
                                                request={"content": frame, "headers": {
                                                    "Authorization": f"Bearer {key}",
                                                    "Content-Type": tensor_codec.CONTENT_TYPE}}),
                }
                procs = []
                try:
                    for kind in baselines:
                        port = free_port()
                        try:
                            procs.append(start_baseline(kind, name, weights, port, Path(tmp) / f"{kind}-{name}.log"))
                        except (RuntimeError, TimeoutError) as exc:
                            print(f"skipping {kind} for {name}: {exc}")
                            continue
                        loads[kind] = partial(http_load, url=f"http://127.0.0.1:{port}/predict", request={"json": body})
                    # Every system in every round, in a rotating order: the load of a shared machine
                    # drifts, and a ratio of two figures measured minutes apart would measure the drift.
                    points: dict[str, dict[int, list[Point]]] = {system: {c: [] for c in levels} for system in loads}
                    # The ceiling again in every round at its best batch size, with every server up
                    # (idle) as they are while each one is measured: the first ceiling ran before
                    # any of them started, and their idle processes take CPU too.
                    best = max(ceilings, key=ceilings.__getitem__)
                    same_round: list[float] = []
                    for r in range(args.rounds):
                        order = list(loads)[r % len(loads):] + list(loads)[:r % len(loads)]
                        for c in levels:
                            for system in order:
                                points[system][c].append(asyncio.run(loads[system](c)))
                        same_round.append(rows_per_s(local, shape, best, args.seconds))
                finally:
                    for proc in procs:
                        stop_baseline(proc)
                dep.delete()
                for system, by_c in points.items():
                    for c, runs in by_c.items():
                        rps, p50, p99, errors = median_point(runs)
                        rows.append((name, system, str(c), f"{rps:,.0f}", f"{p50:.1f}", f"{p99:.1f}",
                                     f"{100 * rps / top:.0f}%", str(sum(run[3] for run in runs))))
                for batch, rate in ceilings.items():
                    rows.append((name, "in-process model(x)", f"batch {batch}", f"{rate:,.0f} rows/s", "", "",
                                 f"{100 * rate / top:.0f}%", ""))
                for c in levels:
                    for ours in ("aiaas", "aiaas (raw http)"):
                        mine = points[ours][c]
                        for system in baselines:
                            if system in points:
                                ratios = [a[0] / b[0] if b[0] else float("inf") for a, b in zip(mine, points[system][c])]
                                summary.append((f"{name} @ c={c}: {ours} / {system} (median of rounds)",
                                                f"{statistics.median(ratios):.2f}x  ("
                                                + ", ".join(f"{v:.2f}" for v in ratios) + ")"))
                        rps, p50, p99, _ = median_point(mine)
                        summary.append((f"{name} @ c={c}: {ours} / in-process ceiling", f"{100 * rps / top:.0f}%"))
                        of_round = [run[0] / ceil for run, ceil in zip(mine, same_round)]
                        summary.append((f"{name} @ c={c}: {ours} / ceiling measured in the same round (median)",
                                        f"{100 * statistics.median(of_round):.0f}%  ("
                                        + ", ".join(f"{100 * v:.0f}" for v in of_round) + f"; batch {best})"))
                        summary.append((f"{name} @ c={c}: {ours} p99 / p50", f"{p99 / p50:.1f}" if p50 else "-"))
            client.close()
        finally:
            backend.send_signal(signal.SIGTERM)
            backend.wait()

    header = ("model", "system", "concurrency", "req/s", "p50 ms", "p99 ms", "of ceiling", "errors")
    load_after = os.getloadavg()
    print("ceiling = the best in-process rows/s over batch sizes 1..64; each request is one row; "
          f"req/s and latencies: the median of {args.rounds} rounds")
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print()
    print_table(summary)


if __name__ == "__main__":
    main()
