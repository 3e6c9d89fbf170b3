"""The cost of a live deployment view on serving throughput: the same deployment with and without a view open.

    python benchmarks/bench_deployment_view.py [--seconds 5] [--rounds 6] [--concurrency 64] [--views 1]

One backend serves the benchmark MLP (overhead-bound, so any extra request
shows) with one replica. Rounds alternate between "no view" and "``--views``
views open" (each polling ``stats()`` once a second and redrawing its
widgets, as in a notebook; here the widgets have no frontend to send to), so
drift on a shared machine hits both alike. The table reports each round, the
median of the paired per-round ratios, and what one view tick costs the
notebook process (a ``stats()`` round trip, then folding and redrawing).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from bench_serving import closed_loop  # noqa: E402
from serving_models import MODELS  # noqa: E402

from aiaas_sdk.widgets import DeploymentView  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--views", type=int, default=1)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    rps: dict[str, list[float]] = {"view": [], "none": []}
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = start_backend(Path(tmp))
        try:
            client = aiaas.Client(url, key)
            torch.manual_seed(0)
            run = client.train(MODELS["mlp"](), max_steps=1, accelerator="cpu", name="view-bench").wait()
            dep = run.deploy("bench-view", replicas=1, max_batch_size=64, max_wait_ms=2).wait_ready()
            time.sleep(6)  # the backend's warm worker imports torch meanwhile: let it finish

            async def load() -> tuple[float, float, float, int]:
                try:
                    return await closed_loop(lambda: dep.apredict(x), args.concurrency, args.seconds)
                finally:
                    await dep.aclose()

            for r in range(args.rounds):
                for mode in (("view", "none") if r % 2 == 0 else ("none", "view")):
                    views = [DeploymentView(client.deployment(dep.name)) for _ in range(args.views)] \
                        if mode == "view" else []
                    rate, p50, p99, errors = asyncio.run(load())
                    polls = sum(v.polls for v in views)
                    for v in views:
                        v.close()
                    rps[mode].append(rate)
                    rows.append((f"round {r + 1}, {'%d view(s)' % args.views if views else 'no view'}",
                                 f"{rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors}"
                                 + (f", {polls} polls" if views else "")))
            # One tick in the notebook process, without load: a view polling back to back.
            view = DeploymentView(client.deployment(dep.name), interval=0.001)
            time.sleep(0.5)
            first, started = view.polls, time.perf_counter()
            time.sleep(3.0)
            tick = (time.perf_counter() - started) / max(1, view.polls - first)
            view.close()
            dep.delete()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    on, off = statistics.median(rps["view"]), statistics.median(rps["none"])
    paired = statistics.median(a / b for a, b in zip(rps["view"], rps["none"], strict=True))
    rows += [("median, view open", f"{on:,.0f} req/s"), ("median, no view (baseline)", f"{off:,.0f} req/s"),
             (f"ratio of medians view/none @ concurrency {args.concurrency}", f"{on / off:.3f}"),
             ("median of paired round ratios view/none", f"{paired:.3f} (overhead {100 * (1 - paired):+.1f}%)"),
             ("one view tick (stats() + fold + redraw), mean", f"{1000 * tick:.2f} ms")]
    print_table(rows)


if __name__ == "__main__":
    main()
