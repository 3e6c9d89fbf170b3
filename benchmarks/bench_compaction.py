"""Pack compaction: the store's space after deleting a dataset whose small files share packs with
kept ones, and how long the compaction takes next to copying the kept files with `cp -r`.

    python benchmarks/bench_compaction.py            # 100 MB of 4-64 KB files (--size-mb to change)

A folder of small files is uploaded as dataset "all" (its chunks go into packs, as the bench's
upload does), then every ``--keep``-th file as dataset "some" (nothing new is stored: the chunks
are there). Deleting "all" leaves each pack holding only the kept files' chunks. The figures:
the packs' bytes before the deletion, when the DELETE answered, and once the compaction is done;
the DELETE's time; the compaction's time from the DELETE's answer; and, as the baseline measured
in the same run, `cp -r` (then `sync`, as the compaction flushes its new pack) of the kept files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _backend import print_table, start_backend  # noqa: E402


def packs_bytes(store: Path) -> int:
    total = 0
    for entry in os.scandir(store / "packs") if (store / "packs").exists() else ():
        try:
            total += entry.stat().st_size
        except FileNotFoundError:  # the compactor deleted it while we listed
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--keep", type=int, default=4, help="every KEEP-th file stays in a kept dataset")
    args = parser.parse_args()
    import aiaas

    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-compaction-") as tmp:
        root = Path(tmp)
        folder, kept = root / "all", root / "some"
        files, budget = 0, args.size_mb * 1024 * 1024
        while budget > 0:
            n = min(budget, rng.randint(4 << 10, 64 << 10))
            data = rng.randbytes(n)
            path = folder / f"d{files % 17}" / f"f{files:06d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if files % args.keep == 0:
                (kept / path.parent.name).mkdir(parents=True, exist_ok=True)
                (kept / path.parent.name / path.name).write_bytes(data)
            files += 1
            budget -= n
        kept_bytes = sum(p.stat().st_size for p in kept.rglob("*") if p.is_file())
        subprocess.run(["sync"], check=False)

        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(kept), str(root / "copy")], check=True)
        subprocess.run(["sync"], check=False)
        cp_s = time.perf_counter() - t

        proc, url, key = start_backend(root / "backend")
        store = root / "backend" / "store"
        try:
            client = aiaas.Client(url, key, timeout=300)
            every = client.upload("all", folder, progress=False)
            client.upload("some", kept, progress=False)
            before = packs_bytes(store)
            t = time.perf_counter()
            every.delete()
            delete_s = time.perf_counter() - t
            answered = packs_bytes(store)
            t = time.perf_counter()
            deadline = t + 600
            while packs_bytes(store) > kept_bytes and time.perf_counter() < deadline:
                time.sleep(0.01)
            compact_s = time.perf_counter() - t
            after = packs_bytes(store)
            sweep = subprocess.run([sys.executable, "-m", "aiaas_backend", "store", "compact", "--data-dir",
                                    str(root / "backend")], capture_output=True, text=True, check=True)
        finally:
            proc.terminate()
            proc.wait()
        shutil.rmtree(root / "copy", ignore_errors=True)
    mb = 1e6
    print_table([
        ("dataset", f"{files} files of 4-64 KB, {args.size_mb} MiB; every {args.keep}th kept in another dataset"),
        ("packs before the delete", f"{before / mb:.1f} MB"),
        ("packs when DELETE answered", f"{answered / mb:.1f} MB (DELETE took {delete_s:.2f} s)"),
        ("packs after compaction", f"{after / mb:.1f} MB; the kept files: {kept_bytes / mb:.1f} MB"),
        ("compaction (after the answer)", f"{compact_s:.2f} s = {compact_s / cp_s:.1f}x cp -r + sync of the kept "
                                          f"files ({cp_s:.2f} s)"),
        ("aiaas store compact afterwards", sweep.stdout.strip()),
    ])


if __name__ == "__main__":
    main()
