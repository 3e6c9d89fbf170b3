"""Serving throughput and latency: aiaas against the in-process ceiling, plain FastAPI and LitServe.

    python benchmarks/bench_serving.py [--seconds 4] [--concurrency 1,16,64,256] [--models mlp,resnet18]

Needs `pip install litserve` for the LitServe column. Everything runs on this
machine on 127.0.0.1, one model worker each (a replica, a LitServe worker, the
FastAPI process itself) with torch's default threads. Each request is one row;
the load is closed-loop at each concurrency for ``--seconds`` after a warm-up.
aiaas is called through the SDK's async client (binary tensors); FastAPI and
LitServe with JSON through the same connection pool the SDK uses (httpx's API
on aiohttp's pool: httpx's own pool collapses above ~16 requests in flight,
which would measure the client, not the servers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from serving_models import MODELS  # noqa: E402

HERE = Path(__file__).parent
MAX_BATCH = 64


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


def ceiling(model: torch.nn.Module, shape: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Rows/s of model(x) in this process, per batch size up to the servers' largest."""
    out = {}
    for batch in (1, 8, 16, 32, MAX_BATCH):
        x = torch.rand(batch, *shape)
        with torch.inference_mode():
            model(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                model(x)
                n += 1
        out[batch] = n * batch / (time.perf_counter() - start)
    return out


def start_baseline(kind: str, model: str, weights: Path, port: int) -> subprocess.Popen[bytes]:
    # Its own process group: LitServe spawns workers that must go down with it.
    proc = subprocess.Popen([sys.executable, str(HERE / "_serve_baselines.py"), kind, model, str(weights), str(port),
                             str(MAX_BATCH)], cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    row = np.zeros((1, *MODELS[model].input_shape)).tolist()
    for _ in range(600):
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": row}, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"{kind} server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--models", default="mlp,resnet18")
    args = parser.parse_args()
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
                body = {"inputs": x.reshape(1, -1).tolist() if name == "mlp" else x.tolist()}
                results: dict[str, dict[int, tuple[float, float, float, int]]] = {}

                async def aiaas_load(c: int) -> tuple[float, float, float, int]:
                    try:
                        return await closed_loop(lambda: dep.apredict(x), c, args.seconds)
                    finally:
                        await dep.aclose()

                results["aiaas"] = {c: asyncio.run(aiaas_load(c)) for c in levels}
                for kind in ("fastapi", "litserve"):
                    port = free_port()
                    try:
                        proc = start_baseline(kind, name, weights, port)
                    except (RuntimeError, TimeoutError) as exc:
                        print(f"skipping {kind}: {exc}", file=sys.stderr)
                        continue

                    async def http_load(c: int, port: int = port) -> tuple[float, float, float, int]:
                        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
                        async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=60) as http:
                            async def call() -> None:
                                resp = await http.post(f"http://127.0.0.1:{port}/predict", json=body)
                                resp.raise_for_status()
                            return await closed_loop(call, c, args.seconds)

                    results[kind] = {c: asyncio.run(http_load(c)) for c in levels}
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                dep.delete()
                for system, by_c in results.items():
                    for c, (rps, p50, p99, errors) in by_c.items():
                        rows.append((name, system, str(c), f"{rps:,.0f}", f"{p50:.1f}", f"{p99:.1f}",
                                     f"{100 * rps / top:.0f}%", str(errors)))
                for batch, rate in ceilings.items():
                    rows.append((name, "in-process model(x)", f"batch {batch}", f"{rate:,.0f} rows/s", "", "",
                                 f"{100 * rate / top:.0f}%", ""))
                c64 = 64 if 64 in levels else levels[-1]
                ours = results["aiaas"][c64][0]
                for system in ("fastapi", "litserve"):
                    if system in results:
                        summary.append((f"{name} @ concurrency {c64}: aiaas / {system}",
                                        f"{ours / results[system][c64][0]:.2f}x"))
                summary.append((f"{name} @ concurrency {c64}: aiaas / in-process ceiling", f"{100 * ours / top:.0f}%"))
                summary.append((f"{name} @ concurrency {c64}: aiaas p99 / p50",
                                f"{results['aiaas'][c64][2] / results['aiaas'][c64][1]:.1f}"))
            client.close()
        finally:
            backend.send_signal(signal.SIGTERM)
            backend.wait()

    header = ("model", "system", "concurrency", "req/s", "p50 ms", "p99 ms", "of ceiling", "errors")
    print("ceiling = the best in-process rows/s over batch sizes 1..64; each request is one row")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print()
    print_table(summary)


if __name__ == "__main__":
    main()
