"""What the sandbox costs: start-up per process, and training and serving throughput with
and without it, measured in one run.

    python benchmarks/bench_sandbox.py [--epochs 40] [--repeats 2] [--requests 3000]

Needs bubblewrap (apt-get install bubblewrap). Three measures:

- start-up: ``python -m site`` started through the launcher, bubblewrap against none
  (median of many starts; the difference is the sandbox's own cost, goal < 100 ms);
- training: two backends, ``AIAAS_SANDBOX=off`` and ``bwrap``, train the same digits job in
  turn; the time from running to finished as the server records it (goal: within 2%);
- serving: each deploys its model and answers the same requests from the async client
  (requests per second, goal: within 2%).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from train_digits import DigitsClassifier, DigitsData  # noqa: E402

import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402
from aiaas_backend.sandbox import LaunchSpec, Limits, make_launcher  # noqa: E402

TRAINER_KWARGS = dict(accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False)


def startup(mode: str, folder: Path, starts: int) -> list[float]:
    launcher = make_launcher(mode, sys.executable, hidden=[], tmp_mb=64)
    spec = LaunchSpec(owner="bench", module="site", args=[], folder=folder, folder_writable=True,
                      limits=Limits(4096, 512, 1024, 0), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    times = []
    for _ in range(starts):
        start = time.perf_counter()
        launcher.start(spec).wait()
        times.append(time.perf_counter() - start)
    return times


def train_seconds(client: aiaas.Client, epochs: int) -> float:
    torch.manual_seed(0)
    run = client.train(DigitsClassifier(hidden=256), datamodule=DigitsData(batch_size=32), max_epochs=epochs,
                       name="bench", **TRAINER_KWARGS).wait()
    return (run.data.finished_at - run.data.started_at).total_seconds()


async def _serve(deployment, xs: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    await deployment.apredict_many(xs, concurrency=32)
    elapsed = time.perf_counter() - start
    await deployment.aclose()
    return len(xs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--starts", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        folder.mkdir()
        off_starts = startup("off", folder, args.starts)
        bwrap_starts = startup("bwrap", folder, args.starts)

        servers, clients = {}, {}
        try:
            for mode in ("off", "bwrap"):
                os.environ["AIAAS_SANDBOX"] = mode
                servers[mode], url, key = start_backend(Path(tmp) / mode)
                clients[mode] = aiaas.Client(url, key, timeout=60)
            os.environ.pop("AIAAS_SANDBOX")
            for client in clients.values():  # the first fit in a worker pays for lazy imports
                client.train(DigitsClassifier(), datamodule=DigitsData(), max_epochs=1, **TRAINER_KWARGS).wait()
            train: dict[str, list[float]] = {"off": [], "bwrap": []}
            runs = {}
            for _ in range(args.repeats):  # in turn, so both see the same machine load
                for mode, client in clients.items():
                    time.sleep(4)  # let the next warm worker finish its imports
                    train[mode].append(train_seconds(client, args.epochs))
            for mode, client in clients.items():
                runs[mode] = client.runs()[0]
            xs = [torch.randn(4, 64) for _ in range(args.requests)]
            serve: dict[str, list[float]] = {"off": [], "bwrap": []}
            deployments = {mode: clients[mode].run(runs[mode].id).deploy(f"bench-{mode}") for mode in clients}
            for _ in range(args.repeats):
                for mode, dep in deployments.items():
                    serve[mode].append(asyncio.run(_serve(dep, xs)))
        finally:
            for client in clients.values():
                client.close()
            for proc in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait()

    off_ms, bwrap_ms = statistics.median(off_starts) * 1000, statistics.median(bwrap_starts) * 1000
    t_off, t_bwrap = statistics.median(train["off"]), statistics.median(train["bwrap"])
    s_off, s_bwrap = statistics.median(serve["off"]), statistics.median(serve["bwrap"])
    print_table([
        ("process start, no sandbox, median ms", f"{off_ms:.1f}"),
        ("process start, bubblewrap, median ms", f"{bwrap_ms:.1f}"),
        ("sandbox start-up cost per process, ms (goal < 100)", f"{bwrap_ms - off_ms:.1f}"),
        (f"training {args.epochs} epochs, no sandbox, median s", f"{t_off:.2f}"),
        (f"training {args.epochs} epochs, bubblewrap, median s", f"{t_bwrap:.2f}"),
        ("training time ratio bwrap / none (goal <= 1.02)", f"{t_bwrap / t_off:.3f}"),
        ("serving, no sandbox, requests/s", f"{s_off:.0f}"),
        ("serving, bubblewrap, requests/s", f"{s_bwrap:.0f}"),
        ("serving throughput ratio bwrap / none (goal >= 0.98)", f"{s_bwrap / s_off:.3f}"),
    ])
    # On a machine others share, interference only ever slows a repeat down: the best of the
    # repeats is the steadier comparison.
    print_table([
        ("training, best of repeats, ratio bwrap / none", f"{min(train['bwrap']) / min(train['off']):.3f}"),
        ("serving, best of repeats, ratio bwrap / none", f"{max(serve['bwrap']) / max(serve['off']):.3f}"),
    ])
    print(f"\nper repeat: training off {train['off']}, bwrap {train['bwrap']}; "
          f"serving off {[round(s) for s in serve['off']]}, bwrap {[round(s) for s in serve['bwrap']]}")


if __name__ == "__main__":
    main()
