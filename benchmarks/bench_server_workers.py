"""API server processes: the MLP's predicts at concurrency 64 with 1, 2 and 4 server processes.

    python benchmarks/bench_server_workers.py [--workers 1,2,4] [--concurrency 64] [--seconds 6] [--rounds 5]

One backend per process count (``AIAAS_SERVER_WORKERS``), all up at once, each serving
the same MLP (benchmarks/serving_models.py) from one replica with the batching
bench_serving.py uses (at most 64 rows, 2 ms wait). The load is bench_serving.py's raw
http row: binary tensor frames, one row each, closed-loop from one client process over
aiohttp's pool of ``--concurrency`` keep-alive connections, which the kernel spreads over a
backend's processes (SO_REUSEPORT). Every backend is measured once per round, the order
rotating between rounds; the ratios to 1 process are taken within each round and their
median is reported, so the drift of a shared machine's load cancels out. The CPU time
the primary and the fronts spent per request (medians of the rounds) says how much of the
primary's work the fronts took over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving
from _backend import print_table, start_backend
from bench_serving import MAX_BATCH, Point, http_load, median_point
from serving_models import MODELS

import aiaas
from aiaas_sdk import tensor_codec


def _fronts(pid: int) -> int:
    return sum("aiaas_backend.fronts.front" in " ".join(p.cmdline()) for p in psutil.Process(pid).children())


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds so far of the primary and of its fronts together."""
    primary = psutil.Process(pid)
    fronts = [p for p in primary.children() if "aiaas_backend.fronts.front" in " ".join(p.cmdline())]
    return sum(primary.cpu_times()[:2]), sum(sum(p.cpu_times()[:2]) for p in fronts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2,4", help="server process counts; the first is the reference")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_serving.SECONDS = args.seconds
    counts = [int(n) for n in args.workers.split(",")]
    load_before = os.getloadavg()
    x = np.random.default_rng(0).random((1, *MODELS["mlp"].input_shape), dtype=np.float32)
    frame = tensor_codec.encode(x)

    with tempfile.TemporaryDirectory() as tmp:
        backends: dict[int, tuple[object, str, str]] = {}
        try:
            for n in counts:
                # No warm worker: an idle worker importing torch would load the machine mid-measure.
                proc, url, key = start_backend(Path(tmp) / f"workers-{n}", env={
                    "AIAAS_SERVER_WORKERS": str(n), "AIAAS_WARM_WORKER": "false"})
                backends[n] = (proc, url, key)
                with aiaas.Client(url, key) as client:
                    torch.manual_seed(0)
                    run = client.train(MODELS["mlp"](), max_steps=1, accelerator="cpu", name="bench-mlp").wait()
                    run.deploy("bench-mlp", replicas=1, max_batch_size=MAX_BATCH, max_wait_ms=2)
                deadline = time.monotonic() + 60
                while _fronts(proc.pid) < n - 1 and time.monotonic() < deadline:  # type: ignore[attr-defined]
                    time.sleep(0.2)
                httpx.post(f"{url}/v1/deployments/bench-mlp/predict", content=frame, timeout=30, headers={
                    "Authorization": f"Bearer {key}", "Content-Type": tensor_codec.CONTENT_TYPE}).raise_for_status()
            time.sleep(3)  # the fronts finish importing

            cpu: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}  # ms per request: primary, fronts

            def load(n: int) -> Point:
                proc, url, key = backends[n]
                before = _cpu_s(proc.pid)  # type: ignore[attr-defined]
                point = asyncio.run(http_load(args.concurrency, f"{url}/v1/deployments/bench-mlp/predict", {
                    "content": frame,
                    "headers": {"Authorization": f"Bearer {key}", "Content-Type": tensor_codec.CONTENT_TYPE}}))
                after = _cpu_s(proc.pid)  # type: ignore[attr-defined]
                # The warm-up second is in the CPU time but not in the count: a slight overestimate, alike for all.
                served = max(1.0, point[0] * args.seconds)
                cpu[n].append(tuple(1000 * (a - b) / served for a, b in zip(after, before)))  # type: ignore[arg-type]
                return point

            for n in counts:  # a warm-up round, not counted
                load(n)
                cpu[n].clear()
            points: dict[int, list[Point]] = {n: [] for n in counts}
            for r in range(args.rounds):
                for n in counts[r % len(counts):] + counts[:r % len(counts)]:
                    points[n].append(load(n))
        finally:
            for proc, _, _ in backends.values():
                proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
                proc.wait()  # type: ignore[attr-defined]

    load_after = os.getloadavg()
    reference = counts[0]
    print(f"MLP, one row per request, concurrency {args.concurrency}, {args.seconds:g} s per point, "
          f"median of {args.rounds} rounds (order rotating)")
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs")
    rows = [("server processes", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req primary, fronts",
             f"/ {reference} process(es), per round")]
    for n in counts:
        rps, p50, p99, _ = median_point(points[n])
        ratios = [a[0] / b[0] if b[0] else float("inf") for a, b in zip(points[n], points[reference])]
        primary_ms = statistics.median(c[0] for c in cpu[n])
        fronts_ms = statistics.median(c[1] for c in cpu[n])
        rows.append((str(n), f"{rps:,.0f}", f"{p50:.1f}", f"{p99:.1f}", str(sum(p[3] for p in points[n])),
                     f"{primary_ms:.2f}, {fronts_ms:.2f}",
                     f"{statistics.median(ratios):.2f}x  (" + ", ".join(f"{v:.2f}" for v in ratios) + ")"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print_table([(f"{n} processes / {reference}: median of per-round ratios",
                  f"{statistics.median(a[0] / b[0] for a, b in zip(points[n], points[reference])):.2f}x")
                 for n in counts[1:]])


if __name__ == "__main__":
    main()
