"""Metric streaming: throughput and latency from ``self.log`` to the SDK, and the
training slowdown reporting causes.

    python benchmarks/bench_metric_stream.py [--steps 4000] [--per-step 10]

A module logs ``--per-step`` metrics on every step, each value being the
wall-clock time of its ``self.log`` call (as seconds since a base time:
Lightning stores logged values as float32). The SDK follows ``run.events()``
live and notes when each point arrives: latency = arrival - logged time. The
same module is then fit in-process with a logger that drops everything (the
same ``self.log`` calls and Lightning logging work, no reporting) as the
baseline for the slowdown; ``logger=False`` is shown for reference.
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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import aiaas

sys.path.insert(0, str(Path(__file__).parent))
from _backend import print_table, start_backend  # noqa: E402


class Chatty(L.LightningModule):
    def __init__(self, steps: int, per_step: int, base: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(16, 16)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        now = time.time() - self.hparams.base
        for i in range(self.hparams.per_step):
            self.log(f"t{i}", now)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-4)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(self.hparams.steps, 16)), batch_size=1)


class DropLogger(L.pytorch.loggers.Logger if hasattr(L, "pytorch") else L.loggers.Logger):
    name, version = "drop", "0"

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--per-step", type=int, default=40, help="40 x ~250 steps/s here = ~10,000 points/s")
    args = parser.parse_args()
    kwargs = dict(max_epochs=1, accelerator="cpu", enable_model_summary=False)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = start_backend(Path(tmp) / "backend")
        try:
            with aiaas.Client(url, key) as client:
                client.train(Chatty(20, 1), **kwargs).wait()  # warm-up
                time.sleep(6)  # the next warm worker's imports
                base = time.time()
                run = client.train(Chatty(args.steps, args.per_step, base), name="chatty", **kwargs)
                latencies, first_progress, last_progress = [], None, None
                for event in run.events():
                    arrived = time.time()
                    if event.kind == "metric":
                        latencies.append(arrived - base - event.data["value"])
                    elif event.kind == "progress":
                        first_progress = first_progress or event.time
                        last_progress = event.time
                run.wait()
                persisted = len(run.metrics())
            time.sleep(6)
            baselines = {}
            for label, logger in (("drop", DropLogger()), ("none", False)):
                start = time.perf_counter()
                L.Trainer(logger=logger, log_every_n_steps=1, enable_progress_bar=False, default_root_dir=tmp,
                          **kwargs).fit(Chatty(args.steps, args.per_step))
                baselines[label] = time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()

    expected = args.steps * args.per_step
    remote_train = last_progress - first_progress
    rows = [
        ("points logged / received live / persisted", f"{expected} / {len(latencies)} / {persisted}"),
        ("throughput self.log -> SDK, points/s", f"{len(latencies) / remote_train:,.0f}"),
        ("latency self.log -> SDK p50, ms", f"{1000 * statistics.median(latencies):.0f}"),
        ("latency self.log -> SDK p99, ms (goal < 300)", f"{1000 * percentile(latencies, 0.99):.0f}"),
        ("training time remote (reporting), s", f"{remote_train:.2f}"),
        ("training time in-process, logger that drops all, s", f"{baselines['drop']:.2f}"),
        ("training time in-process, logger=False, s", f"{baselines['none']:.2f}"),
        ("slowdown from reporting vs dropping logger (goal < 5%)",
         f"{100 * (remote_train / baselines['drop'] - 1):+.1f}%"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
