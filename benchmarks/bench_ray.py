"""The Ray executor's figures: 2 Ray workers against 1, and the Ray path against the local executor.

    python benchmarks/bench_ray.py [--epochs 20] [--hidden 2048] [--repeats 1]

Starts a throwaway Ray cluster on 127.0.0.1 (CPU only, its own temp dir, no
dashboard, no usage stats) and two backends on the same machine: one with the
local executor, one with ``--executor ray`` on that cluster. Each repeat trains
the tutorials' digits classifier (hidden layer widened so the job is compute
bound) three ways, one after another so they see the same machine:

- ``local``: the local executor (one worker process, one torch thread: the baseline);
- ``ray x1``: the Ray executor, ``devices=1`` (one Ray Train worker);
- ``ray x2``: the Ray executor, ``devices=2`` (two Ray Train workers, DDP).

It prints the wall time of ``client.train(...).wait()``, split into start-up
(submit to the first metric) and training (first metric to the end), and the
ratios against the baselines measured in the same run. The medians over the
repeats are shown. Each measured run starts once the backend is idle (its warm
worker, or its warm Ray driver and rank, ready), as a user's next run does.
"""

from __future__ import annotations

import argparse
import os
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tutorials"))
from digits import DigitsClassifier, DigitsData  # noqa: E402

import aiaas  # noqa: E402
from _backend import print_table  # noqa: E402
from tests.conftest import Backend  # noqa: E402
from tests.ray_head import RAY_ENV, RayHead  # noqa: E402


def _warm_ranks() -> dict[int, str]:
    """Ray's warm ranks on this machine (``ray::WarmRank`` actors, by process title)."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        title = " ".join(p.info["cmdline"] or []).strip()
        if title.startswith("ray::WarmRank"):
            found[p.pid] = title
    return found


def wait_idle(backend: Backend, used_ranks: set[int] | None = None, timeout: float = 180.0) -> None:
    """Until the backend is idle: its server and warm worker or driver use under a tenth of a
    core over a second and, on Ray, a fresh warm rank (one no run used) waits constructed.
    Each measured run starts on an idle backend, as a user's next run does once the warm
    worker (local) or the warm driver and rank (Ray) that follow a run are ready."""
    assert backend.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if used_ranks is not None and not any(
                title == "ray::WarmRank" and pid not in used_ranks for pid, title in _warm_ranks().items()):
            time.sleep(0.2)
            continue
        server = psutil.Process(backend.proc.pid)
        procs = [server, *server.children(recursive=True)]
        procs += [psutil.Process(pid) for pid in _warm_ranks()]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.cpu_percent()
        time.sleep(1.0)
        busy = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                busy += p.cpu_percent()
        if busy < 10.0:
            return
    raise TimeoutError(f"the backend at {backend.url} did not settle within {timeout:.0f} s")


def timed_run(client: aiaas.Client, epochs: int, hidden: int, devices: int) -> tuple[float, float]:
    """(start-up, training) seconds of one run."""
    torch.manual_seed(0)
    start = time.perf_counter()
    run = client.train(DigitsClassifier(hidden=hidden), datamodule=DigitsData(), max_epochs=epochs,
                       accelerator="cpu", devices=devices, name=f"bench-x{devices}")
    while not run.metrics("train_loss"):
        time.sleep(0.05)
    first = time.perf_counter()
    run.wait()
    end = time.perf_counter()
    return first - start, end - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    os.environ.update(RAY_ENV)  # the backends and their drivers speak to the head as the tests do
    root = Path(tempfile.mkdtemp(prefix="aiaas-bench-ray-"))
    head = RayHead.start_fresh(num_cpus=2)
    # Ray gives a worker that reserves 1 CPU one thread (OMP_NUM_THREADS=1); the local baseline
    # gets the same, so the ratio measures the path and not torch's thread count.
    local = Backend(root / "local", slots=1, env={"OMP_NUM_THREADS": "1"})
    ray = Backend(root / "ray", slots=1, ray_address=head.address)
    results: dict[str, list[tuple[float, float]]] = {"local": [], "ray x1": [], "ray x2": []}
    try:
        local.start(timeout=120)
        ray.start(timeout=120)
        clients = {"local": local.client(), "ray": ray.client()}
        used_ranks: set[int] = set()
        # One unmeasured run each: the first run pays for imports the next ones do not.
        timed_run(clients["local"], 1, args.hidden, 1)
        wait_idle(ray, used_ranks)
        used_ranks.update(_warm_ranks())
        timed_run(clients["ray"], 1, args.hidden, 1)
        for _ in range(args.repeats):
            for name, backend, devices in (("local", local, 1), ("ray x1", ray, 1), ("ray x2", ray, 2)):
                wait_idle(backend, used_ranks if backend is ray else None)
                used_ranks.update(_warm_ranks())  # the run takes the waiting rank; the next waits for a new one
                results[name].append(timed_run(clients[name.split()[0]], args.epochs, args.hidden, devices))
    finally:
        local.close()
        ray.close()
        head.stop()

    def med(name: str, part: int | None = None) -> float:
        return statistics.median(sum(r) if part is None else r[part] for r in results[name])

    rows = [("workload", f"digits MLP hidden={args.hidden}, {args.epochs} epochs, CPU, repeats={args.repeats}")]
    for name in results:
        rows.append((f"{name}: wall s (start-up + training)",
                     f"{med(name):.1f} ({med(name, 0):.1f} + {med(name, 1):.1f})"))
    rows += [
        ("ray x1 / local, wall", f"{med('ray x1') / med('local'):.2f}"),
        ("ray x1 / local, training only", f"{med('ray x1', 1) / med('local', 1):.2f}"),
        ("ray x2 / ray x1, wall", f"{med('ray x2') / med('ray x1'):.2f}"),
        ("ray x2 / ray x1, training only", f"{med('ray x2', 1) / med('ray x1', 1):.2f}"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
