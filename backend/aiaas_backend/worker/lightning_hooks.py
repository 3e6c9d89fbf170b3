"""Our Lightning callback and logger, built for whichever Lightning the module uses.

``lightning.pytorch`` and ``pytorch_lightning`` have distinct ``Callback`` and
``Logger`` base classes and a Trainer accepts only its own, so the classes are
made per package.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..monitoring.drift import TrainingSample
from .checkpoints import CheckpointWriter, Schedule
from .reporter import Reporter


def _device_name(trainer: Any) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _signature(example: Any, batch: Any) -> dict[str, Any] | None:
    """dtype and per-row shape of the model's input: ``example_input_array`` if the module
    sets one, else the first tensor of the first training batch (``x`` of ``(x, y)``)."""
    import torch

    for candidate in (example, batch):
        while isinstance(candidate, list | tuple) and candidate:
            candidate = candidate[0]
        if isinstance(candidate, torch.Tensor) and candidate.dim() >= 1:
            return {"dtype": str(candidate.dtype).removeprefix("torch."), "shape": list(candidate.shape[1:])}
    return None


def _first_tensor(batch: Any) -> Any:
    while isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    return batch


def save_full_checkpoint(trainer: Any, path: str | Path) -> None:
    """A resumable checkpoint (weights, optimizer, loops, callbacks), asked for explicitly:
    Lightning logs a notice on every save that leaves ``weights_only`` unset."""
    if "weights_only" in inspect.signature(trainer.save_checkpoint).parameters:
        trainer.save_checkpoint(path, weights_only=False)
    else:  # Lightning before 2.4 has no such argument and always saves everything
        trainer.save_checkpoint(path)


def make_logger(pl: ModuleType, reporter: Reporter) -> Any:
    class AiaasLogger(pl.loggers.Logger):  # type: ignore[name-defined,misc]
        """Forwards every ``self.log`` value Lightning flushes to the reporter."""

        @property
        def name(self) -> str:
            return "aiaas"

        @property
        def version(self) -> str:
            return "0"

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            epoch = metrics.get("epoch")
            reporter.metrics(
                {name: float(value) for name, value in metrics.items() if name != "epoch"},
                step,
                int(epoch) if epoch is not None else None,
            )

    return AiaasLogger()


def make_callback(pl: ModuleType, reporter: Reporter, last_ckpt: Path | None, every_s: float,
                  every_n_epochs: int | None = None, after_write: Callable[[Path], object] | None = None) -> Any:
    class AiaasCallback(pl.Callback):  # type: ignore[name-defined,misc]
        """Reports the device, stops on cancel, and checkpoints for resumption to ``last_ckpt``
        (None: someone else checkpoints, as Ray Train does for a worker group), in the
        background (:mod:`.checkpoints`): every ``every_n_epochs`` epochs, or by time --
        at least every ``every_s`` and at epoch ends at most every 10 s, the first one
        included, so a requeued run loses little."""

        def __init__(self) -> None:
            self.stopped_by = None
            self.schedule = Schedule(every_s, every_n_epochs, epoch_end_s=min(every_s, 10.0))
            self.writer = CheckpointWriter(after_write, before_publish=reporter.flush)
            self._last_progress = float("-inf")
            self._total: int | None = None
            self.input_signature: dict[str, Any] | None = None
            self.inputs = TrainingSample()  # the training inputs' statistics, for drift (bounded)

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.device = _device_name(trainer)
            self.on_device(self.device)

        def on_device(self, device: str) -> None:  # replaced by the worker
            pass

        def _check_stop(self, trainer: Any) -> None:
            if reporter.should_stop and not trainer.should_stop:
                self.stopped_by = "cancel" if reporter.cancel_requested else "server"
                trainer.should_stop = True

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if self.input_signature is None:
                self.input_signature = _signature(getattr(pl_module, "example_input_array", None), batch)
            if not self.inputs.full and trainer.current_epoch == 0:
                x = _first_tensor(batch)
                try:  # float() reads half and bfloat16 too, which numpy cannot hold
                    if hasattr(x, "detach") and x.dim() >= 1 and not x.is_complex():
                        self.inputs.add(x.detach().float().cpu().numpy())
                except Exception:  # noqa: BLE001 - drift statistics must never fail a run
                    self.inputs.give_up()

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            total = trainer.estimated_stepping_batches
            self._total = int(total) if isinstance(total, int | float) and math.isfinite(total) else None
            self._progress(trainer)

        def _progress(self, trainer: Any) -> None:
            self._last_progress = time.monotonic()
            max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
            reporter.progress(trainer.global_step, self._total, trainer.current_epoch, max_epochs)

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self._check_stop(trainer)
            now = time.monotonic()
            if now - self._last_progress > 0.2:  # a few a second is all a progress bar needs
                self._progress(trainer)
            if last_ckpt is not None and self.schedule.due_in_epoch():
                self._save(trainer)

        def on_validation_batch_end(self, trainer: Any, *args: Any) -> None:
            self._check_stop(trainer)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._progress(trainer)
            self.writer.wait()  # the last checkpoint is on disk before the run reports its end

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            try:  # a requeued run resumes from the write that was in flight
                self.writer.wait()
            except RuntimeError:
                pass  # the run's own exception is the one to report

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self._progress(trainer)
            if last_ckpt is not None and not self.stopped_by and self.schedule.due_at_epoch_end(trainer.current_epoch):
                self._save(trainer)

        def _save(self, trainer: Any) -> None:
            assert last_ckpt is not None
            self.writer.save(trainer, last_ckpt)
            self.schedule.taken()

    return AiaasCallback()


def make_stop_in_step(pl: ModuleType) -> Any:
    class StopInStep(pl.Callback):  # type: ignore[name-defined,misc]
        """Makes every rank of a group agree to stop when any one wants to.

        Lightning does not reduce ``trainer.should_stop`` across ranks, and our cancel
        reaches rank 0 only; a rank that stops alone would leave the others waiting in a
        collective forever. Runs after our callback, once per training step.
        """

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            trainer.should_stop = trainer.strategy.reduce_boolean_decision(bool(trainer.should_stop), all=False)

    return StopInStep()
