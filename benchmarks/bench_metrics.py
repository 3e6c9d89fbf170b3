"""The cost of Prometheus metrics on serving throughput: the same backend with metrics on and off.

    python benchmarks/bench_metrics.py [--seconds 5] [--rounds 6] [--concurrency 64]

Two backends run side by side, one with ``AIAAS_METRICS=false``, each serving
the benchmark MLP (overhead-bound, so any per-request cost shows) with one
replica. Rounds alternate between them, so drift on a shared machine hits
both alike; the table reports each round, the median of the paired per-round
ratios and the ratio of the medians. While the metrics-on backend is loaded, a
scraper reads ``/metrics`` every second (as Prometheus would), so the scrape's
own cost is counted too.

On a shared, noisy machine the rounds swing more than the effect, so the table
also times the metric work one predict request adds (counter, histogram,
middleware), in this process without any noise from the load: it bounds the
overhead from below the noise floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from bench_serving import closed_loop  # noqa: E402
from serving_models import MODELS  # noqa: E402


def scrape_key(data_dir: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "aiaas_backend", "keys", "create", "--scrape", "--name", "bench",
                          "--data-dir", str(data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


class Scraper(threading.Thread):
    """GET /metrics once a second until stopped, as a Prometheus with a 1 s interval would."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.halt = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}) as http:
            while not self.halt.wait(1.0):
                http.get(f"{self.url}/metrics").raise_for_status()
                self.scrapes += 1


def metric_work_us() -> float:
    """Microseconds of metric work per predict request: what the route, router and middleware record."""
    from aiaas_backend.metrics import Metrics

    metrics = Metrics()

    def one_request() -> None:
        observe = metrics.latency_observer("bench", "dep_bench")
        assert observe is not None
        observe(0.004)
        metrics.predict_done("bench", "dep_bench", 200)
        metrics.http_latency.labels("POST", "/v1/deployments/{name}/predict", "200").observe(0.005)

    n = 50_000
    return min(timeit.repeat(one_request, number=n, repeat=3)) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    rps: dict[str, list[float]] = {"on": [], "off": []}

    with tempfile.TemporaryDirectory() as tmp:
        procs, deps, keys = [], {}, {}
        try:
            for mode in ("on", "off"):
                data_dir = Path(tmp) / mode
                proc, url, key = start_backend(data_dir, {"AIAAS_METRICS": "true" if mode == "on" else "false"})
                procs.append(proc)
                client = aiaas.Client(url, key)
                torch.manual_seed(0)
                run = client.train(MODELS["mlp"](), max_steps=1, accelerator="cpu", name=f"metrics-{mode}").wait()
                deps[mode] = run.deploy(f"bench-{mode}", replicas=1, max_batch_size=64, max_wait_ms=2).wait_ready()
                keys[mode] = (url, scrape_key(data_dir) if mode == "on" else "")
            x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
            time.sleep(6)  # the backends' warm workers import torch meanwhile: let them finish

            async def load(dep: aiaas.Deployment) -> tuple[float, float, float, int]:
                try:
                    return await closed_loop(lambda: dep.apredict(x), args.concurrency, args.seconds)
                finally:
                    await dep.aclose()

            for r in range(args.rounds):
                for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    scraper = Scraper(*keys[mode]) if mode == "on" else None
                    if scraper:
                        scraper.start()
                    rate, p50, p99, errors = asyncio.run(load(deps[mode]))
                    if scraper:
                        scraper.halt.set()
                        scraper.join()
                    rps[mode].append(rate)
                    rows.append((f"round {r + 1}, metrics {mode}",
                                 f"{rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors}"
                                 + (f", {scraper.scrapes} scrapes" if scraper else "")))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    on, off = statistics.median(rps["on"]), statistics.median(rps["off"])
    paired = statistics.median(a / b for a, b in zip(rps["on"], rps["off"]))
    work = metric_work_us()
    rows += [("median, metrics on", f"{on:,.0f} req/s"), ("median, metrics off", f"{off:,.0f} req/s"),
             (f"ratio of medians on/off @ concurrency {args.concurrency}", f"{on / off:.3f}"),
             ("median of paired round ratios on/off", f"{paired:.3f} (overhead {100 * (1 - paired):+.1f}%)"),
             ("metric work per request, in-process", f"{work:.1f} us"),
             ("  as a share of one request's time at 'off'", f"{100 * work * 1e-6 * off:.2f}%")]
    print_table(rows)


if __name__ == "__main__":
    main()
