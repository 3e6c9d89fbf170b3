"""Ray Train's Lightning integration for whichever Lightning package a module was written for.

Ray ships its integration (a DDP strategy, a cluster environment, a report
callback and ``prepare_trainer``) built on ``lightning.pytorch`` only, whenever
that package is installed; a ``pytorch_lightning`` Trainer refuses them as
foreign classes. The integration is small: a strategy that takes its device and
sampler shape from Ray, an environment whose ranks come from Ray's context, and
a callback that hands Ray Train a checkpoint at the end of an epoch. So for
``lightning.pytorch`` we use Ray's strategy and environment, and for
``pytorch_lightning`` we build the same two on that package's base classes.

The report callback is ours for both: Ray's checkpoints every epoch, which costs
a save, an upload into Ray's storage and a barrier each time (about 2 s here,
more than a small model's epoch). Ours checkpoints when ``checkpoint_every_s``
(the setting local workers use) has passed at an epoch's end, as rank 0 sees it:
a worker that dies loses at most that much training, and checkpointing costs at
most a few percent of it, whatever an epoch's length.
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import ray.train
import ray.train.torch

# Ray's callback names the file this way; resumption reads it back by this name, whichever flavour wrote it.
CHECKPOINT_NAME = "checkpoint.ckpt"


@dataclass(frozen=True)
class RayLightning:
    """The pieces a rank adds to its Trainer to train inside a Ray Train worker group."""

    strategy: type
    environment: type
    report_callback: type  # (every_s: float) -> a Callback
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
        """At an epoch's end, once ``every_s`` has passed, every rank reports a full checkpoint to Ray Train.

        Ray Train keeps it (rank 0's) in the run's storage and hands it back through
        ``ray.train.get_checkpoint()`` when it restarts a failed group.
        """

        def __init__(self, every_s: float) -> None:
            self.every_s = every_s
            self._last = time.monotonic()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            # Every rank must report the same times (a report is collective): rank 0's clock decides.
            if not trainer.strategy.broadcast(time.monotonic() - self._last >= self.every_s, src=0):
                return
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
            metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
            with tempfile.TemporaryDirectory(prefix="aiaas-ray-ckpt-") as folder:
                # Saving is collective under DDP: every rank calls it, rank 0 writes.
                trainer.save_checkpoint(str(Path(folder) / CHECKPOINT_NAME), weights_only=False)
                # report() copies the folder into Ray's storage before it returns.
                ray.train.report(metrics=metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
                trainer.strategy.barrier()
            self._last = time.monotonic()

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
