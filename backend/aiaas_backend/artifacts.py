"""Where a run's files live: its code, checkpoints, final weights and output.

One directory per run under the data dir. The local executor's workers write
here directly (same machine); everything is written to a temporary name and
renamed, so a reader never sees half a file.
"""

from __future__ import annotations

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


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Write to the yielded temporary path; it becomes ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    yield tmp
    tmp.replace(path)
