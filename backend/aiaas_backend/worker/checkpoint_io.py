"""Lightning's checkpoints written beside their destination, not staged in ``/tmp``.

Lightning saves a checkpoint (``ModelCheckpoint``, ``trainer.save_checkpoint``) by
serialising it into memory, writing that to a temporary file that fsspec makes in the
temp dir, and moving it into place. In the sandbox the temp dir is a private,
memory-backed ``/tmp`` of ``AIAAS_SANDBOX_TMP_MB`` (docs/security.md): a checkpoint larger
than that failed the run with "No space left on device", one smaller still cost its size
in memory twice and a copy across file systems (the move is one there).

:func:`save_in_place` gives the trainer a checkpoint writer that saves straight into a
temporary file in the destination's folder and renames it over the destination: as atomic
(a reader sees the old file or the whole new one), with no copy in memory or in ``/tmp``.
It replaces only Lightning's default writer (also inside ``AsyncCheckpointIO``): a user's
own ``CheckpointIO`` plugin and the writers strategies bring (XLA's, DeepSpeed's) are left
as they are, as are remote destinations (``s3://...``: fsspec's way).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from ..artifacts import atomic

# The writer for each Lightning package, by the module of the TorchCheckpointIO it extends.
# Made on first use (importing either package costs seconds) but found by name here, so
# that it pickles: ``strategy="ddp_spawn"`` sends the trainer to processes it starts.
_WRITERS = {"InPlaceCheckpointIO": "lightning.fabric.plugins.io.torch_io",
            "InPlaceCheckpointIOForPytorchLightning": "lightning_fabric.plugins.io.torch_io"}


def _save_checkpoint(self: Any, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
    target = os.fspath(path)
    if storage_options is not None or "://" in target:
        _base(self).save_checkpoint(self, checkpoint, path, storage_options=storage_options)
        return
    # The temporary ends in .tmp, not .ckpt: ModelCheckpoint's own listing never takes it for a checkpoint.
    with atomic(Path(target).absolute()) as tmp:
        torch.save(checkpoint, tmp)


def _base(writer: Any) -> type:
    return next(c for c in type(writer).__mro__ if c.__name__ == "TorchCheckpointIO")


def __getattr__(name: str) -> type:
    if name not in _WRITERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    default = importlib.import_module(_WRITERS[name]).TorchCheckpointIO
    writer = type(name, (default,), {
        "__module__": __name__, "__qualname__": name, "save_checkpoint": _save_checkpoint,
        "__doc__": "Lightning's TorchCheckpointIO, saving through a temporary file in the same folder."})
    globals()[name] = writer
    return writer


def _in_place(current: Any) -> Any:
    """The in-place writer for Lightning's default one, else None."""
    name = next((n for n, module in _WRITERS.items() if type(current).__module__ == module), None)
    if name is None or type(current).__name__ != "TorchCheckpointIO":
        return None
    return __getattr__(name)()


def save_in_place(trainer: Any) -> bool:
    """Give ``trainer`` the in-place writer where it has Lightning's default one (also inside a
    wrapper such as ``AsyncCheckpointIO``); True if it did."""
    strategy = trainer.strategy
    current = getattr(strategy, "checkpoint_io", None)
    mine = _in_place(current)
    if mine is not None:
        strategy.checkpoint_io = mine
        return True
    # A wrapper (AsyncCheckpointIO: saves on a thread) around the default writer.
    inner = getattr(current, "checkpoint_io", None) if any(
        c.__name__ == "_WrappingCheckpointIO" for c in type(current).__mro__) else None
    mine = _in_place(inner)
    if mine is None or not hasattr(current, "_checkpoint_io"):
        return False
    # Its setter sets only once (Lightning set the default already): the attribute behind it.
    current._checkpoint_io = mine
    return current.checkpoint_io is mine
