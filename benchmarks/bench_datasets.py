"""Dataset figures: upload throughput vs `cp -r`, re-uploads, a run's start with a cached
dataset, the uploader's peak memory.

    python benchmarks/bench_datasets.py            # a 1 GB folder (--size-mb to change)

Each upload runs in its own process (as a notebook would) so its peak memory is its own. The
uploads go the way `client.upload` chooses for a backend on the same machine (it hands the
backend its open files; docs/datasets.md, "Same-host uploads"); the first one is also measured
over HTTP, the way to a backend on another machine, to a backend of its own.

The baseline is `cp -r` then `sync`, as an upload's commit syncs the store. The throughput
figure is the median of --rounds pairs, each a `cp -r` then a first upload to a fresh backend.
On the development VM, filling memory the kernel has not used lately costs about ten times the
CPU of filling memory it just freed (1 GiB into the page cache: 2-3.7 CPU s against 0.3), and
whichever side met it paid it: one pair said 0.3x and the next 2x. So before each copy and each
upload the bench writes and deletes a scratch file 1.5 times the folder's size
(:func:`warm_pages`; ``--no-warm`` to measure without). CPU seconds are reported next to wall
times. The 1% re-upload is the median of three (a different 1% each time), against that
backend's first upload and the median first upload. The time to a run's first step is
measured with the backend's warm worker ready, with the dataset not yet in the node cache and
then with it there. Needs about (2 x rounds + 5) x --size-mb free in the temp dir; everything
is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
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

    def peak_mb():
        # This process's own peak (VmHWM): ru_maxrss would also count the parent's memory, which a
        # child started with vfork + exec shares until the exec (430 MB once the bench has torch).
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    client = aiaas.Client(sys.argv[1], sys.argv[2])  # imports the SDK (half a CPU second): not the upload's
    start = resource.getrusage(resource.RUSAGE_SELF)
    base = peak_mb()
    t = time.perf_counter()
    ds = client.upload(sys.argv[3], sys.argv[4], progress=False, same_host=sys.argv[5] == "same-host")
    took = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"s": took, "version": ds.version, "sent": ds.sent_bytes, "peak_mb": peak_mb(), "base_mb": base,
                      "cpu": usage.ru_utime + usage.ru_stime - start.ru_utime - start.ru_stime}))
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


def warm_pages(root: Path, size: int, enabled: bool = True) -> None:
    """Write ``size`` bytes of scratch into ``root`` and delete them. On this VM, memory the kernel
    has not used lately costs about ten times the CPU to fill as memory it just freed (writing 1
    GiB into the page cache: 2-3.7 CPU s, against 0.3 s right after deleting a file as large),
    so whichever of `cp -r` and the upload meets it first pays it. Each is measured right after
    this, so both write into the same kind of memory."""
    if not enabled:
        return
    block = bytes(1024 * 1024)
    scratch = root / "scratch"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // len(block)):
            os.write(fd, block)
    finally:
        os.close(fd)
        scratch.unlink()


def _round(root: Path, folder: Path, size: int, i: int, warm: bool
           ) -> tuple[dict, tuple[subprocess.Popen[bytes], str, str, dict]]:
    """One `cp -r` (then `sync`) and one first upload to a fresh backend, back to back; the
    backend is left running. Copies and stores stay until the end: deleting thousands of files
    just before an upload would make ext4 skip their recently freed inodes while it creates the
    store's (measured: a fifth of the server's CPU time), a cost the copy did not pay."""
    warm_pages(root, size * 3 // 2, warm)
    t, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(["cp", "-r", str(folder), str(root / f"copy{i}")], check=True)
    subprocess.run(["sync"], check=False)
    cp = {"s": time.perf_counter() - t, "cpu": _children_cpu() - cpu, "load": os.getloadavg()[0]}
    proc, url, key = start_backend(root / f"backend{i}")
    env = {"AIAAS_DATA_DIR": str(root / f"sdk{i}")}  # a hash cache of its own: a true first upload
    try:
        # A backend that was started a while ago: the warm worker's import of torch took a core
        # for seconds right after start (it made the first upload up to twice as slow).
        wait_warm_worker(proc.pid)
        warm_pages(root, size * 3 // 2, warm)
        first = upload(url, key, "big", folder, proc.pid, env=env)
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return {"cp": cp, "first": first}, (proc, url, key, env)


def reuploads(root: Path, folder: Path, files: list[Path], size: int, rng: random.Random, url: str, key: str,
              pid: int, how: str, env: dict[str, str], warm: bool) -> tuple[list[dict], int]:
    """Three re-uploads, each after changing a different 1% of the folder's ``size`` bytes; the
    bytes changed each time."""
    out = []
    for _ in range(3):
        changed = change_share(files, size // 100, rng)
        warm_pages(root, 256 * 1024 * 1024, warm)
        out.append(upload(url, key, "big", folder, pid, how, env))
    return out, changed


def _median(uploads: list[dict]) -> dict:
    return sorted(uploads, key=lambda u: u["s"])[len(uploads) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="cp -r / first upload pairs (the median is the figure)")
    parser.add_argument("--no-warm", action="store_true", help="measure without warming the page allocator first")
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    import aiaas

    need = (2 * args.rounds + 5) * size  # the folder, per round a copy and a store; HTTP's, the cache, scratch
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < need:
        sys.exit(f"{free / 2**30:.1f} GiB free in {tempfile.gettempdir()}; this size needs {need / 2**30:.1f}: "
                 "pass a smaller --size-mb or fewer --rounds")
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-datasets-") as tmp:
        root = Path(tmp)
        folder = root / "data"
        files = make_folder(folder, size)
        subprocess.run(["sync"], check=False)
        rounds = []
        for i in range(args.rounds):
            result, (proc, url, key, env) = _round(root, folder, size, i, not args.no_warm)
            rounds.append(result)
            if i < args.rounds - 1:
                proc.terminate()
                proc.wait()
        try:  # the last round's backend: re-uploads and runs
            again = upload(url, key, "big", folder, proc.pid, env=env)
            rng = random.Random(1)
            edits, changed = reuploads(root, folder, files, size, rng, url, key, proc.pid, "same-host", env,
                                      not args.no_warm)
            small = root / "small"
            make_folder(small, 1024 * 1024, seed=2)
            upload(url, key, "small", small, proc.pid, env=env)
            load_upload = os.getloadavg()[0]
            client = aiaas.Client(url, key, timeout=120)
            cold_big, start_big = first_step_delay(client, "big", proc.pid)
            cold_small, start_small = first_step_delay(client, "small", proc.pid)
        finally:
            proc.terminate()
            proc.wait()
        # The same first upload with every chunk over HTTP (the path a remote backend takes), to a
        # backend and a hash cache of their own.
        proc, url, key = start_backend(root / "backend-http")
        try:
            wait_warm_worker(proc.pid)
            warm_pages(root, size * 3 // 2, not args.no_warm)
            far = {"AIAAS_DATA_DIR": str(root / "sdk-http")}
            http = upload(url, key, "big", folder, proc.pid, "http", far)
            # The same 1% re-uploads, the way to a backend on another machine.
            http_edits, _ = reuploads(root, folder, files, size, rng, url, key, proc.pid, "http", far,
                                          not args.no_warm)
        finally:
            proc.terminate()
            proc.wait()
        load_end = os.getloadavg()[0]
    mb = size / 1e6
    ratios = [r["cp"]["s"] / r["first"]["s"] for r in rounds]
    cp_median = statistics.median(r["cp"]["s"] for r in rounds)
    first = rounds[-1]["first"]  # the re-uploads' own backend
    first_median = statistics.median(r["first"]["s"] for r in rounds)
    edit, http_edit = _median(edits), _median(http_edits)
    uploads = [*(r["first"] for r in rounds), *edits, http, *http_edits]
    rows = [("dataset", f"{args.size_mb} MiB in {len(files)} files (8-48 MB, 100 KB-2 MB, 4-64 KB); "
             f"{'not ' if args.no_warm else ''}warmed before each copy and upload")]
    for i, r in enumerate(rounds):
        cp, up = r["cp"], r["first"]
        rows.append((f"round {i + 1}: cp -r / first upload", (
            f"{cp['s']:.2f} s ({cp['cpu']:.2f} CPU s, with sync) / {up['s']:.2f} s ({mb / up['s']:.0f} MB/s; CPU: "
            f"uploader {up['cpu']:.2f} s + server {up['server_cpu']:.2f} s) = {cp['s'] / up['s']:.2f}x; "
            f"load {cp['load']:.1f}")))
    rows += [
        ("first upload (same host) vs cp -r", f"median {statistics.median(ratios):.2f}x of {len(ratios)} rounds "
         f"({', '.join(f'{x:.2f}x' for x in ratios)}) (goal >= 0.5)"),
        ("first upload over HTTP", (f"{http['s']:.2f} s ({mb / http['s']:.0f} MB/s), {cp_median / http['s']:.2f}x "
         f"the median cp -r; CPU: uploader {http['cpu']:.2f} s + server {http['server_cpu']:.2f} s")),
        ("re-upload, unchanged", f"{again['s']:.2f} s, sent {again['sent']} bytes (goal < 2 s)"),
        ("re-upload, 1% changed", (f"median {edit['s']:.3f} s of 3 "
         f"({', '.join(format(e['s'], '.3f') for e in edits)}) = "
         f"{100 * edit['s'] / first['s']:.1f}% of that backend's first upload, {100 * edit['s'] / first_median:.1f}% "
         f"of the median one; sent {edit['sent'] / 1e6:.1f} MB of {changed / 1e6:.1f} MB changed each (goal < 5%)")),
        ("re-upload over HTTP, 1% changed", (f"median {http_edit['s']:.3f} s of 3 "
         f"({', '.join(format(e['s'], '.3f') for e in http_edits)}) = {100 * http_edit['s'] / http['s']:.1f}% of "
         f"the first upload over HTTP")),
        ("load average, uploads / end", f"{load_upload:.1f} / {load_end:.1f} on {os.cpu_count()} CPUs"),
        (f"train -> first step, {args.size_mb} MiB, not cached", f"{cold_big:.2f} s"),
        ("train -> first step, 1 MB, not cached", f"{cold_small:.2f} s"),
        (f"train -> first step, {args.size_mb} MiB cached", f"{start_big:.2f} s"),
        ("train -> first step, 1 MB cached", (f"{start_small:.2f} s, {start_big - start_small:+.2f} s from the "
         "above (goal: within 1 s)")),
        ("uploader peak memory", (f"{max(u['peak_mb'] for u in uploads):.0f} MB (first uploads "
         f"{max(r['first']['peak_mb'] for r in rounds):.0f}, re-uploads {max(e['peak_mb'] for e in edits):.0f}, "
         f"over HTTP {http['peak_mb']:.0f} and {max(e['peak_mb'] for e in http_edits):.0f}; "
         f"{first['base_mb']:.0f} MB after imports; goal < 200 MB)")),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
