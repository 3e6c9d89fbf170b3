"""Resumable checkpoints written off the training thread, and when to take them.

Training waits only for a copy of the checkpoint (weights, optimizer and loop
state, as ``trainer.save_checkpoint`` would write it), taken at the end of an
epoch; a background thread writes that copy while the next epoch trains. The next
checkpoint waits for the previous write, so at most one copy is in memory and
writes never pile up. A write that fails is raised on the training thread at the
next checkpoint, or when training ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection

from ..artifacts import atomic


def snapshot(trainer: Any) -> dict[str, Any]:
    """The full checkpoint of ``trainer`` now, its tensors copied to the CPU (the next
    optimizer step changes the live ones)."""
    # What trainer.save_checkpoint writes: Lightning exposes no public way to build it unwritten.
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    return apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))


class CheckpointWriter:
    """One checkpoint write in flight at a time, in a background thread. ``after_write`` (a Ray
    worker's send to the API) runs in that thread too, once the file is whole.

    ``before_publish`` (the reporter's flush) runs after the file is written and before it
    replaces the previous one: a worker killed after that resumes from this checkpoint, and
    the metrics of the steps before it must already be on the server, or a resumed run's
    chart keeps a gap where the killed worker's unsent points were."""

    def __init__(self, after_write: Callable[[Path], object] | None = None,
                 before_publish: Callable[[], object] | None = None) -> None:
        self._after_write = after_write
        self._before_publish = before_publish
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: seconds the training thread spent on checkpoints (waiting and copying), for the log
        self.blocked_s = 0.0
        self.written = 0

    def save(self, trainer: Any, path: Path) -> None:
        """Copy ``trainer``'s checkpoint now and write it to ``path`` (atomically) in the background."""
        start = time.perf_counter()
        self.wait()
        checkpoint = snapshot(trainer)
        io = trainer.strategy.checkpoint_io  # the user's plugin, if any, reads it back on resume

        def write() -> None:
            try:
                with atomic(path) as tmp:
                    io.save_checkpoint(checkpoint, tmp)
                    if self._before_publish is not None:
                        self._before_publish()
                if self._after_write is not None:
                    self._after_write(path)
                self.written += 1
            except BaseException as exc:  # noqa: BLE001 - raised on the training thread
                self._error = exc

        self._thread = threading.Thread(target=write, name="aiaas-checkpoint", daemon=True)
        self._thread.start()
        self.blocked_s += time.perf_counter() - start

    def wait(self) -> None:
        """Until the write in flight (if any) is on disk; raises its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing a checkpoint failed: {error}") from error


class Schedule:
    """When to checkpoint: at the end of every ``every_n_epochs``-th epoch if that is set;
    otherwise at an epoch's end once ``epoch_end_s`` (default ``every_s``) has passed since
    the last checkpoint, the first epoch's end included, and within an epoch longer than
    ``every_s`` once that has passed."""

    def __init__(self, every_s: float, every_n_epochs: int | None, epoch_end_s: float | None = None) -> None:
        self.every_s = every_s
        self.every_n_epochs = every_n_epochs
        self.epoch_end_s = every_s if epoch_end_s is None else epoch_end_s
        self._last = float("-inf")
        self._started = time.monotonic()

    def due_at_epoch_end(self, epoch: int) -> bool:
        if self.every_n_epochs is not None:
            return (epoch + 1) % self.every_n_epochs == 0
        return time.monotonic() - self._last >= self.epoch_end_s

    def due_in_epoch(self) -> bool:
        """On the time setting only: an epoch count means 'at epoch ends'."""
        return self.every_n_epochs is None and time.monotonic() - max(self._last, self._started) >= self.every_s

    def taken(self) -> None:
        self._last = time.monotonic()
