"""Optimise at deploy: speed-up and output deviation of int8, compile and onnx.

    python benchmarks/bench_optimize.py [--models mlp,char-transformer] [--methods int8,compile,onnx]
                                        [--seconds 4] [--concurrency 16] [--threads 1]

Two measurements per model and method, both against the unoptimised model in the same run:

* in-process: the same code the backend's measuring process runs (aiaas_backend.serving.optimize),
  batches of 16 rows, median call time, alternating calls, ``--threads`` torch threads;
* through a deployment: one replica (``AIAAS_REPLICA_THREADS=--threads``) per variant, one-row
  requests from the SDK's async client at ``--concurrency`` for ``--seconds``; the ratio is
  requests/s of the optimised deployment over the unoptimised one, and the deviation is what
  the backend measured at deploy (``dep.optimization``).

The models have random weights (serving_models.py): speed does not depend on training.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from aiaas_backend.serving.optimize import Predict, apply, measure, sample_rows  # noqa: E402
from serving_models import MODELS  # noqa: E402


def in_process(model: torch.nn.Module, method: str, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    model = model.eval()
    # The transformer brings its own example token ids; the MLP gets float rows of its shape.
    rows, _ = sample_rows(model, {"shape": list(model.input_shape), "dtype": "float32"}, 256)
    with tempfile.TemporaryDirectory() as folder:
        optimised = apply(model, method, rows[:2], Path(folder), threads, export=True)
        return measure(Predict(model).eval(), optimised, rows, 16, budget_s=2.0)


async def rate(dep: aiaas.Deployment, x: torch.Tensor, concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests/s over ``seconds`` after one warm-up request, and the warm-up's own seconds
    (a replica that compiles on its first request shows there, not as a rate near zero)."""
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await dep.apredict(x)
            done += 1

    t0 = time.perf_counter()
    await dep.apredict(x)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    stop = t0 + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await dep.aclose()
    return done / elapsed, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,char-transformer")
    parser.add_argument("--methods", default="int8,compile,onnx")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    methods = args.methods.split(",")
    rows: list[tuple[str, str]] = []
    data_dir = Path(tempfile.mkdtemp(prefix="aiaas-bench-opt-"))
    proc, url, key = start_backend(data_dir, {"AIAAS_REPLICA_THREADS": str(args.threads)})
    try:
        client = aiaas.Client(url, key, timeout=120)
        for name in args.models.split(","):
            cls = MODELS[name]
            torch.manual_seed(0)
            for method in methods:
                m = in_process(cls(), method, args.threads)
                rows.append((f"{name} {method} in-process speed-up (batch 16)", f"{m['speedup']:.2f}x"))
                rows.append((f"{name} {method} in-process max deviation", f"{m['max_abs_deviation']:.2e}"))
            torch.manual_seed(0)
            run = client.train(cls(), max_epochs=1, name=f"bench-{name}").wait()
            x = cls().example_input_array[:1] if name == "char-transformer" else torch.rand(1, *cls.input_shape)
            base = run.deploy(f"{name}-plain", max_batch_size=64)
            base_rate, first = asyncio.run(rate(base, x, args.concurrency, args.seconds))
            rows.append((f"{name} plain deployment req/s (c={args.concurrency}) / first request",
                         f"{base_rate:.0f} / {first * 1000:.0f} ms"))
            base.delete()
            for method in methods:
                try:
                    dep = run.deploy(f"{name}-{method}", max_batch_size=64, optimize=method, optimize_tolerance=1e3)
                except aiaas.AiaasError as exc:
                    rows.append((f"{name} {method} deployment", f"refused: {exc}"))
                    continue
                r, first = asyncio.run(rate(dep, x, args.concurrency, args.seconds))
                rows.append((f"{name} {method} deployment req/s (ratio vs plain) / first request",
                             f"{r:.0f} ({r / base_rate:.2f}x) / {first * 1000:.0f} ms"))
                rows.append((f"{name} {method} deploy-time speed-up / deviation",
                             f"{dep.optimization.speedup:.2f}x / {dep.optimization.max_abs_deviation:.2e}"))
                dep.delete()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(f"threads={args.threads} cpus={os.cpu_count()} torch={torch.__version__}")
    print_table(rows)


if __name__ == "__main__":
    main()
