"""Remote training overhead: an aiaas run against the same Trainer.fit in-process.

    python benchmarks/bench_train_overhead.py [--epochs 120] [--repeats 3]

Starts a fresh backend on 127.0.0.1 (own data dir, real worker processes),
then alternates in-process and remote runs of the digits classifier so both
see the same machine load, and prints a table:

- wall time of ``client.train(...).wait()`` / ``Trainer.fit`` in-process
  (goal: at most 1.15 for a ~20 s job);
- time from ``client.train(...)`` returning to the first metric being
  readable through the API (goal: under 2 s), with the warm worker ready
  ("warm") and right after another run ended, while the next warm worker is
  still importing ("back-to-back").
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from train_digits import DigitsClassifier, DigitsData  # noqa: E402

import aiaas  # noqa: E402
from _backend import print_table, start_backend  # noqa: E402

TRAINER_KWARGS = dict(accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False)


def in_process(epochs: int, root: str) -> float:
    torch.manual_seed(0)
    model, data = DigitsClassifier(hidden=256), DigitsData(batch_size=32)
    start = time.perf_counter()
    trainer = L.Trainer(max_epochs=epochs, default_root_dir=root, **TRAINER_KWARGS)
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


def remote(client: aiaas.Client, epochs: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model, data = DigitsClassifier(hidden=256), DigitsData(batch_size=32)
    start = time.perf_counter()
    run = client.train(model, datamodule=data, max_epochs=epochs, name="bench", **TRAINER_KWARGS)
    submitted = time.perf_counter()
    first_metric = _until_first_metric(run, submitted)
    run.wait()
    return time.perf_counter() - start, first_metric


def first_metric_latency(client: aiaas.Client) -> float:
    run = client.train(DigitsClassifier(), datamodule=DigitsData(), max_epochs=1, name="latency", **TRAINER_KWARGS)
    latency = _until_first_metric(run, time.perf_counter())
    run.wait()
    return latency


def _until_first_metric(run: aiaas.Run, since: float) -> float:
    while not run.metrics():
        if run.refresh().data.status.terminal:
            run.wait()  # raises RunFailed with the reason
            raise RuntimeError(f"run {run.id} ended without logging a metric")
        time.sleep(0.02)
    return time.perf_counter() - since


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=120, help="sized for a ~20 s job on 2 CPU cores")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = start_backend(Path(tmp) / "backend")
        try:
            with aiaas.Client(url, key) as client:
                # Warm both sides up: the first fit in a process pays for lazy imports.
                client.train(DigitsClassifier(), datamodule=DigitsData(), max_epochs=1, **TRAINER_KWARGS).wait()
                in_process(1, tmp)
                local_times, remote_times, firsts = [], [], []
                for _ in range(args.repeats):
                    # After a remote run the backend starts the next warm worker (seconds of
                    # imports): let it finish so it does not slow the in-process baseline.
                    time.sleep(6)
                    local_times.append(in_process(args.epochs, tmp))
                    remote_s, first_s = remote(client, args.epochs)
                    remote_times.append(remote_s)
                    firsts.append(first_s)
                time.sleep(6)
                warm = [first_metric_latency(client) for _ in range(1)]
                back_to_back = [first_metric_latency(client) for _ in range(2)][1:]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()

    local, rem = statistics.median(local_times), statistics.median(remote_times)
    rows = [
        ("Trainer.fit in-process (baseline), median s", f"{local:.2f}"),
        ("client.train(...).wait() remote, median s", f"{rem:.2f}"),
        ("ratio remote / in-process (goal <= 1.15)", f"{rem / local:.3f}"),
        ("train() returned -> first metric, 20 s job, median s", f"{statistics.median(firsts):.2f}"),
        ("train() returned -> first metric, warm worker, s (goal < 2)", f"{warm[0]:.2f}"),
        ("train() returned -> first metric, back-to-back run, s", f"{back_to_back[0]:.2f}"),
    ]
    print_table(rows)
    print(f"\nper repeat: in-process {[round(t, 2) for t in local_times]}, remote {[round(t, 2) for t in remote_times]}")


if __name__ == "__main__":
    main()
