"""Where a run's files live: its code, checkpoints, final weights and output.

One directory per run under the data dir. The local executor's workers write
here directly (same machine); everything is written to a temporary name and
renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FINAL_FILES = {"lightning": "final.ckpt", "weights": "weights.pt"}


class Artifacts:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def run_dir(self, run_id: str) -> Path:
        path = self.root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def code(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "code.bin"

    def last_checkpoint(self, run_id: str) -> Path:
        # Not "checkpoints/": Lightning's own ModelCheckpoint writes there.
        return self.run_dir(run_id) / "resume" / "last.ckpt"

    def output_log(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "output.log"

    def final(self, run_id: str, kind: str) -> Path:
        return self.run_dir(run_id) / FINAL_FILES[kind]

    def result(self, run_id: str, attempt: int) -> Path:
        return self.run_dir(run_id) / f"result-{attempt}.json"

    def failure(self, run_id: str, attempt: int) -> Path:
        """The first error a rank of a Ray Train worker group raised (the group may be retried)."""
        return self.run_dir(run_id) / f"failure-{attempt}.json"

    def ray_storage(self, run_id: str) -> Path:
        """Where Ray Train keeps this run's checkpoints (``checkpoint_*`` directories)."""
        return self.run_dir(run_id) / "ray-train"

    def pending_events(self, run_id: str, attempt: int) -> Path:
        return self.run_dir(run_id) / f"pending-{attempt}.jsonl"

    def write_atomic(self, path: Path, data: bytes) -> None:
        with atomic(path) as tmp:
            tmp.write_bytes(data)


class RunFolder(Artifacts):
    """One run's folder on its own, as a sandboxed worker or replica sees it (no other runs
    exist there, and the folder's name is not the run's)."""

    def __init__(self, folder: Path) -> None:
        self.root = folder
        self._folder = folder

    def run_dir(self, run_id: str) -> Path:
        return self._folder


def open_regular(path: Path) -> int:
    """Open a file a worker wrote, for the server to read: refuses a link (the worker could
    point one at the database) and anything but a regular file (a FIFO would block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def read_regular(path: Path) -> str:
    with os.fdopen(open_regular(path), "rb") as f:
        return f.read().decode()


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Write to the yielded temporary path; it becomes ``path`` only if the block succeeds. A block
    that fails leaves ``path`` as it was and no temporary behind (it would count against the run's
    disk limit, and a checkpoint folder would keep it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
