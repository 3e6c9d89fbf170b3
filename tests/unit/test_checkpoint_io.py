"""The worker's checkpoint writer: saves beside the destination, replaces only Lightning's default."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as L
import pytest
import pytorch_lightning
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aiaas_backend.worker.checkpoint_io import save_in_place

# Lightning 2.6 calls a torch pytree check that torch 2.13 deprecates, on every fit in this process.
pytestmark = pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning")


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)


def _trainer(root: Path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=root, max_epochs=1, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_checkpoints_never_touch_the_temp_dir(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where fsspec would stage the file
    trainer = _trainer(tmp_path / "run")
    assert save_in_place(trainer)
    seen: list[list[str]] = []
    real_replace = os.replace

    def replace(src, dst):  # the temporary sits beside the destination when it is renamed
        seen.append([os.path.dirname(src), os.path.dirname(dst), os.listdir(scratch)])
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    trainer.fit(_Tiny())
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(os.listdir(folder)) == ["epoch=0-step=2.ckpt"]
    assert seen == [[str(folder), str(folder), []]]
    assert torch.load(folder / "epoch=0-step=2.ckpt", weights_only=False)["global_step"] == 2


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temporary(tmp_path):
    trainer = _trainer(tmp_path)
    save_in_place(trainer)
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"old")
    with pytest.raises(Exception, match="pickle|Can't"):
        trainer.strategy.checkpoint_io.save_checkpoint({"bad": lambda: None}, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_a_users_own_writer_is_kept(tmp_path):
    class Mine(TorchCheckpointIO):
        pass

    trainer = _trainer(tmp_path, plugins=[Mine()])
    assert not save_in_place(trainer)
    assert type(trainer.strategy.checkpoint_io) is Mine


def test_the_default_writer_inside_async_saves_is_replaced(tmp_path):
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    trainer = _trainer(tmp_path, plugins=[AsyncCheckpointIO()])
    assert save_in_place(trainer)
    wrapper = trainer.strategy.checkpoint_io
    assert type(wrapper) is AsyncCheckpointIO and type(wrapper.checkpoint_io).__name__ == "InPlaceCheckpointIO"
    trainer.fit(_Tiny())
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch=0-step=2.ckpt"]


def test_the_writer_pickles_for_spawned_processes(tmp_path):
    # strategy="ddp_spawn" pickles the trainer into processes that import this module afresh.
    trainer = _trainer(tmp_path)
    save_in_place(trainer)
    code = ("import pickle, sys; w = pickle.loads(sys.stdin.buffer.read()); "
            "w.save_checkpoint({'step': 5}, sys.argv[1]); print(type(w).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spawned.ckpt")], capture_output=True,
                         input=pickle.dumps(trainer.strategy.checkpoint_io), check=True)
    assert out.stdout.decode().strip() == "InPlaceCheckpointIO"
    assert torch.load(tmp_path / "spawned.ckpt", weights_only=False) == {"step": 5}


def test_remote_paths_and_pytorch_lightning_trainers(tmp_path):
    trainer = pytorch_lightning.Trainer(default_root_dir=tmp_path, logger=False, accelerator="cpu")
    assert save_in_place(trainer)
    writer = trainer.strategy.checkpoint_io
    assert isinstance(writer, pytorch_lightning.plugins.TorchCheckpointIO)
    # A URL goes Lightning's own way (fsspec): memory:// is fsspec's in-process file system.
    writer.save_checkpoint({"step": 3}, "memory://aiaas-test/x.ckpt")
    import fsspec

    with fsspec.open("memory://aiaas-test/x.ckpt", "rb") as f:
        assert torch.load(f, weights_only=False) == {"step": 3}
