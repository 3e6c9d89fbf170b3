"""Ray Train's Lightning integration for whichever Lightning package a module was written for.

Ray ships its integration (a DDP strategy, a cluster environment, a report
callback and ``prepare_trainer``) built on ``lightning.pytorch`` only, whenever
that package is installed; a ``pytorch_lightning`` Trainer refuses them as
foreign classes. The integration is small: a strategy that takes its device and
sampler shape from Ray, an environment whose ranks come from Ray's context, and
a callback that hands Ray Train a checkpoint at the end of an epoch. So for
``lightning.pytorch`` we use Ray's strategy and environment, and for
``pytorch_lightning`` we build the same two on that package's base classes.

The report callback is ours for both: Ray's checkpoints every epoch and waits for
each save, upload and barrier (about 2 s here, more than a small model's epoch).
Ours checkpoints on the run's schedule (``checkpoint_every_n_epochs``, or at an
epoch's end once ``checkpoint_every_s`` has passed, as rank 0 sees it), and
training waits only for a copy of the state: rank 0 hands Ray Train an upload
function that writes the copy into the run's storage from Ray's upload thread
(``CheckpointUploadMode.ASYNC``). The next checkpoint waits for that write.

When the run's files go through the API (``files_via_api``: the Ray executor's
workers need no shared file system), Ray Train gets metrics only: rank 0 writes the
copy in the background to its node's folder and sends it to the API as the run's
``resume/last.ckpt``, and a restarted group fetches it from there (``train.py``).
"""

from __future__ import annotations

import functools
import io
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import ray.train
import ray.train.torch
import torch

from .checkpoints import CheckpointWriter, Schedule, snapshot

# The longest the next checkpoint waits for the previous one's write.
_WRITE_WAIT_S = 600.0
# Ray's callback names the file this way; resumption reads it back by this name, whichever flavour wrote it.
CHECKPOINT_NAME = "checkpoint.ckpt"


@dataclass(frozen=True)
class RayLightning:
    """The pieces a rank adds to its Trainer to train inside a Ray Train worker group."""

    strategy: type
    environment: type
    report_callback: type  # (schedule: checkpoints.Schedule, keep=None, flush=None) -> a Callback
    prepare_trainer: Any  # (trainer) -> trainer


@functools.cache
def for_package(pl: ModuleType) -> RayLightning:
    """Ray's strategy and environment for ``lightning.pytorch``, ours for ``pytorch_lightning``; our report callback."""
    if pl.__name__.startswith("lightning"):
        from ray.train import lightning as ray_lightning

        return RayLightning(ray_lightning.RayDDPStrategy, ray_lightning.RayLightningEnvironment,
                            _report_callback(pl), ray_lightning.prepare_trainer)
    return _built_on(pl)


def _report_callback(pl: ModuleType) -> type:
    class ReportCallback(pl.callbacks.Callback):  # type: ignore[name-defined,misc]
        """At the epoch ends the schedule names, every rank reports to Ray Train; rank 0's report
        carries a full checkpoint, written into the run's storage in the background.

        Ray Train keeps it in the run's storage and hands it back through
        ``ray.train.get_checkpoint()`` when it restarts a failed group.
        """

        def __init__(self, schedule: Schedule, keep: tuple[Path, Any] | None = None,
                     flush: Callable[[], object] | None = None) -> None:
            # keep: (where on this node, send to the API) -- rank 0 stores checkpoints itself.
            # flush: rank 0's reporter's; the metrics of the steps a checkpoint holds reach the
            # API before the checkpoint does, or a group resumed from it leaves a gap in the chart.
            self.schedule = schedule
            self._keep = keep
            self._writer = CheckpointWriter(keep[1], before_publish=flush) if keep is not None else None
            self._written = threading.Event()
            self._written.set()
            self._error: BaseException | None = None

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            # Every rank must report the same times (a report is collective): rank 0's clock decides.
            if not trainer.strategy.broadcast(self.schedule.due_at_epoch_end(trainer.current_epoch), src=0):
                return
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
            metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
            self.wait()  # the next checkpoint waits for the previous write
            if self._keep is not None:
                if trainer.global_rank == 0:
                    assert self._writer is not None
                    self._writer.save(trainer, self._keep[0])
                ray.train.report(metrics=metrics)
                self.schedule.taken()
                return
            if trainer.global_rank != 0:  # DDP ranks hold the same state: rank 0's copy is the checkpoint
                ray.train.report(metrics=metrics)
                self.schedule.taken()
                return
            state = snapshot(trainer)
            token = Path(tempfile.mkdtemp(prefix="aiaas-ray-ckpt-"))  # Ray wants a checkpoint to hand the upload
            self._written.clear()

            def write(_: ray.train.Checkpoint, name: str) -> ray.train.Checkpoint:
                try:
                    storage = ray.train.get_context().get_storage()
                    folder = f"{storage.experiment_fs_path}/{name}"
                    buffer = io.BytesIO()
                    torch.save(state, buffer)
                    storage.storage_filesystem.create_dir(folder)
                    with storage.storage_filesystem.open_output_stream(f"{folder}/{CHECKPOINT_NAME}") as f:
                        f.write(buffer.getbuffer())
                    return ray.train.Checkpoint(folder, filesystem=storage.storage_filesystem)
                except BaseException as exc:
                    self._error = exc
                    raise
                finally:
                    self._written.set()

            # Ray deletes the (empty) token folder once the upload function has returned.
            ray.train.report(metrics=metrics, checkpoint=ray.train.Checkpoint.from_directory(str(token)),
                             checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC, checkpoint_upload_fn=write,
                             delete_local_checkpoint_after_upload=True)
            self.schedule.taken()

        def wait(self) -> None:
            if self._writer is not None:
                self._writer.wait()
                return
            # Bounded: Ray skips a report (and our write with it) when a failed worker reset the
            # group's barrier; the group is being restarted then, and must not hang here.
            self._written.wait(timeout=_WRITE_WAIT_S)
            if self._error is not None:
                error, self._error = self._error, None
                raise RuntimeError(f"writing a checkpoint failed: {error}") from error

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.wait()

    return ReportCallback


def _built_on(pl: ModuleType) -> RayLightning:
    environments = __import__(f"{pl.__name__}.plugins.environments", fromlist=["LightningEnvironment"])

    class Strategy(pl.strategies.DDPStrategy):  # type: ignore[name-defined,misc]
        """Lightning's DDP with the device Ray assigned and one shard of the data per Ray rank."""

        @property
        def root_device(self) -> Any:
            return ray.train.torch.get_device()

        @property
        def distributed_sampler_kwargs(self) -> dict[str, int]:
            return {"num_replicas": self.world_size, "rank": self.global_rank}

    class Environment(environments.LightningEnvironment):  # type: ignore[misc]
        """Ranks and world size as Ray Train started the group; Lightning may not reassign them."""

        def world_size(self) -> int:
            return ray.train.get_context().get_world_size()

        def global_rank(self) -> int:
            return ray.train.get_context().get_world_rank()

        def local_rank(self) -> int:
            return ray.train.get_context().get_local_rank()

        def node_rank(self) -> int:
            return ray.train.get_context().get_node_rank()

        def set_world_size(self, size: int) -> None:
            pass

        def set_global_rank(self, rank: int) -> None:
            pass

        def teardown(self) -> None:
            pass

    def prepare_trainer(trainer: Any) -> Any:
        if not isinstance(trainer.strategy, Strategy):
            raise RuntimeError(f"a Ray Train worker group needs aiaas's Ray DDP strategy; the Trainer has "
                               f"{type(trainer.strategy).__name__}")
        return trainer

    return RayLightning(Strategy, Environment, _report_callback(pl), prepare_trainer)
