"""Dataset figures: upload throughput vs `cp -r`, re-uploads, a run's start with a cached
dataset, the uploader's peak memory.

    python benchmarks/bench_datasets.py            # a 1 GB folder (--size-mb to change)

Each upload runs in its own process (as a notebook would) so its peak memory is its own. The
uploads go the way `client.upload` chooses for a backend on the same machine (it hands the
backend its open files; docs/datasets.md, "Same-host uploads"); the first one is also measured
over HTTP, the way to a backend on another machine, to a backend of its own.
CPU seconds are reported next to wall times: on a machine shared with other work the wall
ratio moves with its load, the CPU an upload costs (uploader + server) much less. The
baseline is `cp -r` then `sync`, as an upload's commit syncs the store. The time to a run's
first step is measured with the backend's warm worker ready, with the dataset not yet in the
node cache and then with it there. Needs about 6x --size-mb free in the temp dir; the folder,
its copy and the backend's data are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _backend import print_table, start_backend  # noqa: E402

_UPLOAD = textwrap.dedent("""
    import json, resource, sys, time
    import aiaas
    start = resource.getrusage(resource.RUSAGE_SELF)
    base = start.ru_maxrss
    client = aiaas.Client(sys.argv[1], sys.argv[2])
    t = time.perf_counter()
    ds = client.upload(sys.argv[3], sys.argv[4], progress=False, same_host=sys.argv[5] == "same-host")
    took = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"s": took, "version": ds.version, "sent": ds.sent_bytes, "peak_mb": usage.ru_maxrss / 1024,
                      "base_mb": base / 1024, "cpu": usage.ru_utime + usage.ru_stime - start.ru_utime - start.ru_stime}))
""")


def make_folder(root: Path, size: int, seed: int = 0) -> list[Path]:
    """Mixed sizes: half the bytes in 8-48 MB files, 30% in 100 KB-2 MB, 20% in 4-64 KB."""
    rng = random.Random(seed)
    files = []
    for share, low, high in ((0.5, 8 << 20, 48 << 20), (0.3, 100 << 10, 2 << 20), (0.2, 4 << 10, 64 << 10)):
        budget = int(size * share)
        while budget > 0:
            n = min(budget, rng.randint(low, high))
            path = root / f"d{len(files) % 17}" / f"f{len(files):06d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(n))
            files.append(path)
            budget -= n
    return files


def change_share(files: list[Path], budget: int, rng: random.Random) -> int:
    """Rewrite random files with new bytes until about ``budget`` bytes changed (files that would
    overshoot it are skipped: "1%" means 1%, not one more 48 MB file); returns the bytes changed."""
    changed = 0
    for path in rng.sample(files, len(files)):
        n = path.stat().st_size
        if changed + n > budget:
            continue
        path.write_bytes(os.urandom(n))
        changed += n
        if changed > budget * 0.97:
            break
    return changed


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upload(url: str, key: str, name: str, folder: Path, server_pid: int, how: str = "same-host",
           env: dict[str, str] | None = None) -> dict:
    """One upload in a fresh process; ``how``: "same-host" (the backend reads the files, when it
    can) or "http" (every chunk over HTTP)."""
    before = _cpu_seconds(server_pid)
    out = subprocess.run([sys.executable, "-c", _UPLOAD, url, key, name, str(folder), how], capture_output=True,
                         text=True, check=True, env={**os.environ, **(env or {})})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_cpu"] = _cpu_seconds(server_pid) - before
    return result


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        here = todo.pop()
        for task in Path(f"/proc/{here}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def wait_warm_worker(server_pid: int, timeout: float = 180.0) -> None:
    """Until the backend's warm worker has done its imports and waits for a run on its stdin
    (so a run's start measures the data, not torch's import)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _descendants(server_pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                wchan = Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                continue
            if b"aiaas_backend.worker" in cmd and "pipe_read" in wchan:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no warm worker waiting for a run after {timeout:.0f} s")


def first_step_delay(client, name: str, server_pid: int) -> tuple[float, float]:
    """Seconds from ``client.train`` to the first training step: with the dataset not yet in the
    node cache, then with it there (warm worker ready both times)."""
    import lightning.pytorch as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            if batch_idx == 0:
                print(f"FIRST_STEP {time.time()}", flush=True)
            return self.net(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=4)

    delays = []
    for _ in range(3):  # the first materialises the dataset; the others find it cached
        wait_warm_worker(server_pid)
        t = time.time()
        run = client.train(Probe(), datasets=[name], max_epochs=1, accelerator="cpu").wait()
        line = next(x for x in run.logs().splitlines() if x.startswith("FIRST_STEP "))
        delays.append(float(line.split()[1]) - t)
    return delays[0], min(delays[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    import aiaas

    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < 6 * size:  # the folder, its copy, two stores, the node cache, room to spare
        sys.exit(f"{free / 2**30:.1f} GiB free in {tempfile.gettempdir()}; this size needs {6 * size / 2**30:.1f}: "
                 "pass a smaller --size-mb")
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-datasets-") as tmp:
        root = Path(tmp)
        folder = root / "data"
        files = make_folder(folder, size)
        subprocess.run(["sync"], check=False)
        # `cp -r` then `sync`: the upload's commit syncs the store too (a version's bytes are on disk).
        # The copy stays until the end: deleting thousands of files just before the upload would
        # make ext4 skip their recently freed inodes while it creates the store's (measured: a
        # fifth of the server's CPU time), a cost the copy did not pay.
        t, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(["cp", "-r", str(folder), str(root / "copy")], check=True)
        subprocess.run(["sync"], check=False)
        cp_s, cp_cpu = time.perf_counter() - t, _children_cpu() - cpu
        load_cp = os.getloadavg()[0]
        # The same first upload with every chunk over HTTP (the path a remote backend takes), to a
        # backend of its own and with a hash cache of its own, so neither finds the other's work
        # (its store stays until the end, like the copy: see above).
        proc, url, key = start_backend(root / "backend-http")
        try:
            wait_warm_worker(proc.pid)
            http = upload(url, key, "big", folder, proc.pid, "http", {"AIAAS_DATA_DIR": str(root / "sdk-http")})
        finally:
            proc.terminate()
            proc.wait()
        load_http = os.getloadavg()[0]
        proc, url, key = start_backend(root / "backend")
        try:
            wait_warm_worker(proc.pid)
            first = upload(url, key, "big", folder, proc.pid)
            again = upload(url, key, "big", folder, proc.pid)
            changed = change_share(files, size // 100, random.Random(1))
            edited = upload(url, key, "big", folder, proc.pid)
            small = root / "small"
            make_folder(small, 1024 * 1024, seed=2)
            upload(url, key, "small", small, proc.pid)
            load_upload = os.getloadavg()[0]
            client = aiaas.Client(url, key, timeout=120)
            cold_big, start_big = first_step_delay(client, "big", proc.pid)
            cold_small, start_small = first_step_delay(client, "small", proc.pid)
            load_end = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait()
    mb = size / 1e6
    print_table([
        ("dataset", f"{args.size_mb} MiB in {len(files)} files (8-48 MB, 100 KB-2 MB, 4-64 KB)"),
        ("cp -r of the folder", f"{cp_s:.2f} s ({mb / cp_s:.0f} MB/s), {cp_cpu:.2f} CPU s (with sync); "
         f"load {load_cp:.1f}"),
        ("first upload (same host)", f"{first['s']:.2f} s ({mb / first['s']:.0f} MB/s), "
         f"{first['s'] and cp_s / first['s']:.2f}x cp -r (goal >= 0.5)"),
        ("first upload, CPU", f"uploader {first['cpu']:.2f} s + server {first['server_cpu']:.2f} s "
         f"(cp -r: {cp_cpu:.2f} s)"),
        ("first upload over HTTP", f"{http['s']:.2f} s ({mb / http['s']:.0f} MB/s), {cp_s / http['s']:.2f}x cp -r; "
         f"CPU: uploader {http['cpu']:.2f} s + server {http['server_cpu']:.2f} s; load {load_http:.1f}"),
        ("re-upload, unchanged", f"{again['s']:.2f} s, sent {again['sent']} bytes (goal < 2 s)"),
        ("re-upload, 1% changed", f"{edited['s']:.2f} s = {100 * edited['s'] / first['s']:.1f}% of the first, "
         f"sent {edited['sent'] / 1e6:.1f} MB of {changed / 1e6:.1f} MB changed (goal < 5%)"),
        ("load average, uploads / end", f"{load_upload:.1f} / {load_end:.1f} on {os.cpu_count()} CPUs"),
        (f"train -> first step, {args.size_mb} MiB, not cached", f"{cold_big:.2f} s"),
        ("train -> first step, 1 MB, not cached", f"{cold_small:.2f} s"),
        (f"train -> first step, {args.size_mb} MiB cached", f"{start_big:.2f} s"),
        ("train -> first step, 1 MB cached", f"{start_small:.2f} s, {start_big - start_small:+.2f} s from the above "
         "(goal: within 1 s)"),
        ("uploader peak memory", f"{max(first['peak_mb'], edited['peak_mb']):.0f} MB "
         f"({first['base_mb']:.0f} MB after imports; goal < 200 MB)"),
    ])


if __name__ == "__main__":
    main()
