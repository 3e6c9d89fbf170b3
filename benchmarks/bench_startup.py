"""Process start-up: how long a worker, a replica and their imports take.

    python benchmarks/bench_startup.py [--repeats 3]

Every training worker, serving replica and optimize job is a fresh Python process,
so its imports are paid again and again (the test suite starts hundreds). For each
repeat this starts a fresh backend on 127.0.0.1 and measures, in wall seconds:

- ``train() -> first metric, fresh server``: a run submitted as soon as the server
  answers, while its warm worker is still importing (what most tests see);
- ``train() -> first metric, back-to-back``: the next run, submitted as soon as the
  first ended, so the worker that takes it has only just started importing;
- ``deploy() -> serving``: ``run.deploy(..., wait=True)``, one replica;
- ``replica spawn -> socket``: ``python -m aiaas_backend.serving.replica`` started by
  hand on the run's folder, until it listens (no server in the way);

- ``worker imports`` / ``replica imports``: CPU seconds of a fresh interpreter that
  imports the worker's (``aiaas_backend.worker.train``) or the replica's entry module
  and exits: what every process pays before it reads its assignment
  (``--imports-only`` measures just these);

and prints medians with the load average. Noisy on a shared machine: compare
figures taken in one run, and read the load.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _backend import print_table, start_backend

import aiaas


class TinyRegressor(L.LightningModule):
    """Small enough that start-up, not training, is what the clock sees."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)


KWARGS = {"max_epochs": 2, "accelerator": "cpu", "log_every_n_steps": 1, "enable_progress_bar": False}


def until_first_metric(run: aiaas.Run, since: float) -> float:
    deadline = time.monotonic() + 120
    while not run.metrics():
        if run.refresh().data.status.terminal:
            run.wait()  # raises RunFailed with the reason
            raise RuntimeError(f"run {run.id} ended without logging a metric")
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run.id} logged no metric within 120 s")
        time.sleep(0.02)
    return time.perf_counter() - since


def replica_spawn(artifacts: Path, run_id: str, folder: Path) -> tuple[float, float]:
    """Wall seconds until the replica listens, and the CPU seconds it spent until then."""
    sock = folder / "replica.sock"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiaas_backend.serving.replica", "--socket", str(sock), "--artifacts", str(artifacts),
         "--run", run_id, "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    try:
        deadline = time.monotonic() + 120
        while not sock.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the replica exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not listen within 120 s")
            time.sleep(0.01)
        wall = time.perf_counter() - start
    finally:
        proc.kill()
        _, _, usage = os.wait4(proc.pid, 0)  # a listening replica sleeps in accept(): its CPU is start-up
        proc.returncode = -signal.SIGKILL
        sock.unlink(missing_ok=True)
    return wall, usage.ru_utime + usage.ru_stime


ENTRY_MODULES = {"worker imports, CPU s": "aiaas_backend.worker.train",
                 "replica imports, CPU s": "aiaas_backend.serving.replica"}


def import_cpu(module: str) -> float:
    """CPU seconds (user + system) of a fresh interpreter that imports ``module``."""
    proc = subprocess.Popen([sys.executable, "-c", f"import {module}"], stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"importing {module} failed with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def one_repeat(tmp: Path, figures: dict[str, list[float]]) -> None:
    data_dir = tmp / "backend"
    start = time.perf_counter()
    proc, url, key = start_backend(data_dir)
    try:
        with aiaas.Client(url, key) as client:
            while True:  # the server writes server.json before it answers
                try:
                    client.runs(limit=1)
                    break
                except aiaas.BackendUnavailable:
                    time.sleep(0.02)
            figures["server start -> answering"].append(time.perf_counter() - start)
            since = time.perf_counter()
            run = client.train(TinyRegressor(), **KWARGS)
            figures["train() -> first metric, fresh server"].append(until_first_metric(run, since))
            run.wait()
            since = time.perf_counter()
            run2 = client.train(TinyRegressor(), **KWARGS)
            figures["train() -> first metric, back-to-back"].append(until_first_metric(run2, since))
            run2.wait()
            since = time.perf_counter()
            dep = run.deploy(f"startup{os.getpid()}", replicas=1)
            figures["deploy() -> serving"].append(time.perf_counter() - since)
            dep.predict(torch.zeros(2, 8))
            dep.delete()
            folder = tmp / "sock"
            folder.mkdir(exist_ok=True)
            wall, cpu = replica_spawn(data_dir / "artifacts", run.id, folder)
            figures["replica spawn -> socket"].append(wall)
            figures["replica spawn -> socket, CPU s"].append(cpu)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--imports-only", action="store_true", help="only the entry modules' import CPU")
    args = parser.parse_args()
    names = [] if args.imports_only else [
        "server start -> answering", "train() -> first metric, fresh server", "train() -> first metric, back-to-back",
        "deploy() -> serving", "replica spawn -> socket", "replica spawn -> socket, CPU s"]
    figures: dict[str, list[float]] = {name: [] for name in [*names, *ENTRY_MODULES]}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, module in ENTRY_MODULES.items():
            figures[name].append(import_cpu(module))
        if not args.imports_only:
            with tempfile.TemporaryDirectory() as tmp:
                one_repeat(Path(tmp), figures)
    load_after = os.getloadavg()
    print_table([(f"{name}, median{'' if name.endswith('CPU s') else ' s'}", f"{statistics.median(v):.2f}")
                 for name, v in figures.items()])
    print("\nper repeat:")
    for name, values in figures.items():
        print(f"  {name}: {[round(v, 2) for v in values]}")
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}")


if __name__ == "__main__":
    main()
