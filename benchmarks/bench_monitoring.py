"""The cost of deployment monitoring on serving, and how fast an SLO breach becomes an alert.

    python benchmarks/bench_monitoring.py [--seconds 5] [--rounds 4] [--concurrency 64]

Throughput: two backends side by side serve the benchmark MLP (overhead-bound, so
any per-request cost shows) with one replica each. "on" has everything on:
Prometheus metrics, drift sampling (one row in 8, the default), and alert rules
evaluated every second (p99, error rate, queue saturation and drift). "off" has
``AIAAS_METRICS=false``, ``AIAAS_DRIFT_SAMPLE_EVERY=0`` and no rules. Both are
loaded at once, each by its own client process, in rounds on one schedule: on a
shared machine, rounds that alternate see different loads from everything else
(they swung 2x here and hid any 3% effect), while simultaneous rounds see the
same one, and the kernel gives each busy server the same CPU share, so their
throughput ratio is the ratio of their cost per request. The table gives the
median of the rounds' ratios, each server's CPU time per request, and, timed in
this process free of the load's noise, the monitoring work one request adds.

Time to alert: on the "on" backend, a model that sleeps 20 ms per batch
(``max_batch_size=1``) has a p99 rule of 100 ms; idle it answers in ~20 ms.
Then 64 clients at once make requests queue for ~1.3 s. The table gives the
time from the load's start, and from the first request slower than the rule,
to the ``alert_raised`` event's timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).parent))
import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from bench_serving import closed_loop  # noqa: E402
from serving_models import MODELS  # noqa: E402


class Sleepy(MODELS["mlp"]):  # type: ignore[misc,valid-type]
    """The MLP, 20 ms slower per batch: an SLO a load can breach."""

    def predict_step(self, batch, batch_idx=0):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        return self(batch)


def sampling_us() -> float:
    """Microseconds drift sampling adds to one predict request of one row (one in 8 kept)."""
    from aiaas_backend.monitoring.drift import RecentSample

    sample = RecentSample(every=8)
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    n = 100_000
    return min(timeit.repeat(lambda: sample.add(x), number=n, repeat=3)) / n * 1e6


def monitoring_work_us() -> float:
    """Microseconds of monitoring work one predict request adds on the API server, in this process.

    The same calls as the server's with monitoring on (the HTTP middleware around the app, the
    latency histogram, the status counter, drift sampling) minus those with it off, around an
    app that answers at once: the cost free of the load's noise.
    """
    from aiaas_backend.metrics import HttpMetrics, Metrics
    from aiaas_backend.monitoring.drift import RecentSample

    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    scope = {"type": "http", "method": "POST", "path": "/v1/deployments/bench/predict",
             "route": types.SimpleNamespace(path="/v1/deployments/{name}/predict")}
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    body = {"type": "http.response.body", "body": b"{}"}

    async def app(scope: dict, receive: object, send: Callable) -> None:  # type: ignore[type-arg]
        await send(start)
        await send(body)

    async def sent(message: dict) -> None:  # type: ignore[type-arg]
        pass

    async def per_request_s(on: bool, n: int) -> float:
        metrics = Metrics(enabled=on)
        middleware = HttpMetrics(app, metrics)
        sample = RecentSample(every=8)
        t = time.perf_counter()
        for _ in range(n):
            if on:
                sample.add(x)
            observe = metrics.latency_observer("bench", "dep_bench")
            if observe is not None:
                observe(0.004)
            await middleware(scope, None, sent)
            metrics.predict_done("bench", "dep_bench", 200)
        return (time.perf_counter() - t) / n

    async def best() -> tuple[float, float]:
        # Many short batches, alternating, keeping the fastest of each: a batch the machine's
        # other load did not interrupt.
        on, off = [], []
        for _ in range(200):
            on.append(await per_request_s(True, 500))
            off.append(await per_request_s(False, 500))
        return min(on), min(off)

    on, off = asyncio.run(best())
    return max(0.0, on - off) * 1e6


def client_rounds(url: str, key: str, name: str, rounds: int, seconds: float, gap: float,
                  concurrency: int) -> None:
    """``--client``: closed-loop rounds against one deployment on a shared wall-clock schedule; prints JSON.

    Says "ready" once imported and connected, then reads the schedule's start (unix seconds) from stdin.
    """
    dep = aiaas.Client(url, key).deployment(name)
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())

    async def load() -> tuple[float, float, float, int]:
        try:
            return await closed_loop(lambda: dep.apredict(x), concurrency, seconds)
        finally:
            await dep.aclose()

    out = []
    for r in range(rounds):
        late = time.time() - (start_at + r * (seconds + gap))
        time.sleep(max(0.0, -late))
        out.append((*asyncio.run(load()), max(0.0, late)))
    print(json.dumps(out))


def together_rounds(targets: dict[str, tuple[str, str, str]], servers: dict[str, psutil.Process],
                    args: argparse.Namespace) -> tuple[dict[str, list[tuple[float, float, float, int, float]]],
                                                       dict[str, list[float]]]:
    """Both loads at once, each from its own client process, round after round on one schedule.

    Both backends then share the machine's state in every round (whatever else runs on it),
    and the kernel gives each busy server process the same share of CPU, so the ratio of their
    throughputs is the ratio of their cost per request. Also each server's CPU seconds per
    request over each round's measured window.
    """
    # closed_loop's warm-up comes before its measured seconds, and its last requests end after them
    # (seconds at p99 on a loaded machine): the gap lets both clients start each round on time.
    gap, warm = 4.0, min(1.0, args.seconds / 4)
    clients = {mode: subprocess.Popen(
        [sys.executable, __file__, "--client", url, key, name, "--rounds", str(args.rounds), "--seconds",
         str(args.seconds), "--gap", str(gap), "--concurrency", str(args.concurrency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for mode, (url, key, name) in targets.items()}
    for proc in clients.values():  # importing torch and the SDK takes a while on a loaded machine
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    start_at = time.time() + 1.0
    for proc in clients.values():
        assert proc.stdin is not None
        proc.stdin.write(f"{start_at}\n")
        proc.stdin.flush()
    cpu_us: dict[str, list[float]] = {mode: [] for mode in targets}
    per_round = args.seconds + warm + gap
    for r in range(args.rounds):
        begin = start_at + r * (args.seconds + gap) + warm
        time.sleep(max(0.0, begin - time.time()))
        before = {mode: sum(servers[mode].cpu_times()[:2]) for mode in targets}
        time.sleep(max(0.0, begin + args.seconds - time.time()))
        for mode in targets:
            cpu_us[mode].append(sum(servers[mode].cpu_times()[:2]) - before[mode])
    results = {mode: [tuple(row) for row in json.loads(proc.communicate(timeout=per_round * 3 + 120)[0])]
               for mode, proc in clients.items()}  # communicate() closes stdin, written already
    for mode in targets:  # CPU seconds per request in the round's measured window
        cpu_us[mode] = [cpu / max(1.0, rate * args.seconds) * 1e6 for cpu, (rate, *_rest) in
                        zip(cpu_us[mode], results[mode])]
    return results, cpu_us  # type: ignore[return-value]


def time_to_alert(client: aiaas.Client, concurrency: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    run = client.train(Sleepy(), max_steps=1, accelerator="cpu", name="sleepy").wait()
    dep = run.deploy("sleepy", replicas=1, max_batch_size=1, max_wait_ms=0, max_queue=4096).wait_ready()
    dep.set_alerts(p99_ms=100, window_s=10)
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    for _ in range(20):
        dep.predict(x)
    time.sleep(2.0)  # a few quiet evaluations first
    assert not [e for e in dep.events() if e.kind == "alert_raised"], "breached before the load"
    first_slow: list[float] = []

    async def one() -> None:
        start = time.time()
        await dep.apredict(x)
        if time.time() - start > 0.1 and not first_slow:
            first_slow.append(time.time())

    async def load(seconds: float) -> None:
        try:
            await closed_loop(one, concurrency, seconds)
        finally:
            await dep.aclose()

    started = time.time()
    asyncio.run(load(8.0))
    raised = [e for e in dep.events() if e.kind == "alert_raised"]
    if not raised:
        raise SystemExit("no alert within the 8 s of load")
    return raised[0].time - started, raised[0].time - first_slow[0], raised[0].data["value"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client", nargs=3, metavar=("URL", "KEY", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--gap", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_rounds(*args.client, args.rounds, args.seconds, args.gap, args.concurrency)
        return
    rows: list[tuple[str, str]] = []
    rps: dict[str, list[float]] = {"on": [], "off": []}
    envs = {"on": {"AIAAS_METRICS": "true"},
            "off": {"AIAAS_METRICS": "false", "AIAAS_DRIFT_SAMPLE_EVERY": "0"}}
    with tempfile.TemporaryDirectory() as tmp:
        procs, deps, clients, keys = [], {}, {}, {}
        try:
            for mode in ("on", "off"):
                proc, url, key = start_backend(Path(tmp) / mode, envs[mode])
                procs.append(proc)
                clients[mode] = client = aiaas.Client(url, key)
                keys[mode] = key
                torch.manual_seed(0)
                run = client.train(MODELS["mlp"](), max_steps=1, accelerator="cpu", name=f"mon-{mode}").wait()
                deps[mode] = run.deploy(f"bench-{mode}", replicas=1, max_batch_size=64, max_wait_ms=2).wait_ready()
            # Rules that hold under this load: evaluated every second, never raised.
            deps["on"].set_alerts(p99_ms=10_000, error_rate=0.5, queue_saturation=0.99, drift=100.0)
            time.sleep(6)  # the backends' warm workers import torch meanwhile: let them finish

            servers = {"on": psutil.Process(procs[0].pid), "off": psutil.Process(procs[1].pid)}
            targets = {mode: (clients[mode].url, keys[mode], deps[mode].name) for mode in ("on", "off")}
            results, cpu_us = together_rounds(targets, servers, args)
            for r in range(args.rounds):
                for mode in ("on", "off"):
                    rate, p50, p99, errors, late = results[mode][r]
                    rps[mode].append(rate)
                    rows.append((f"round {r + 1}, monitoring {mode}",
                                 f"{rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors}, "
                                 f"API server CPU {cpu_us[mode][r]:.0f} us/request"
                                 + (f", started {late:.1f} s late" if late > 0.2 else "")))
            report = deps["on"].drift()
            rows.append(("drift sample after the rounds (on)", f"{report.sample_size} rows, score {report.score}"))
            from_load, from_slow, value = time_to_alert(clients["on"], args.concurrency)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    on, off = statistics.median(rps["on"]), statistics.median(rps["off"])
    paired = statistics.median(a / b for a, b in zip(rps["on"], rps["off"]))
    cpu_paired = statistics.median(a / b for a, b in zip(cpu_us["on"], cpu_us["off"]))
    work = sampling_us()
    all_work = monitoring_work_us()
    off_cpu = statistics.median(cpu_us["off"])
    rows += [("median, monitoring on", f"{on:,.0f} req/s"), ("median, monitoring off", f"{off:,.0f} req/s"),
             (f"median of the rounds' ratios on/off @ concurrency {args.concurrency}",
              f"{paired:.3f} (overhead {100 * (1 - paired):+.1f}%; goal < 3%)"),
             ("API server CPU per request, median on / off",
              f"{statistics.median(cpu_us['on']):.0f} / {statistics.median(cpu_us['off']):.0f} us"),
             ("median of paired round ratios of that CPU, on/off",
              f"{cpu_paired:.3f} (throughput overhead when the server is the bottleneck: "
              f"{100 * (1 - 1 / cpu_paired):+.1f}%)"),
             ("monitoring work per request, in-process (on - off)", f"{all_work:.2f} us"),
             ("  as a share of the API server's CPU per request at 'off'", f"{100 * all_work / off_cpu:.2f}%"),
             ("  of which drift sampling", f"{work:.2f} us"),
             ("SLO breach -> alert_raised, from the load's start", f"{from_load:.2f} s (goal < 5 s)"),
             ("SLO breach -> alert_raised, from the first slow answer", f"{from_slow:.2f} s (p99 {value:.0f} ms)")]
    print_table(rows)


if __name__ == "__main__":
    main()
