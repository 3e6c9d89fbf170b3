"""Checkpoints written off the training thread (aiaas_backend.worker.checkpoints)."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aiaas_backend.worker.checkpoints import CheckpointWriter, Schedule

# Lightning 2.6 calls a torch pytree check that torch 2.13 deprecates, on every fit in this process.
pytestmark = pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning")


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)


def _fitted() -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    trainer.fit(Tiny(), DataLoader(data, batch_size=8))
    return trainer


def test_the_write_holds_the_state_of_the_moment_it_was_asked_for(tmp_path):
    trainer = _fitted()
    weight = trainer.lightning_module.net.weight
    before = weight.detach().clone()
    writer = CheckpointWriter()
    writer.save(trainer, tmp_path / "resume" / "last.ckpt")
    with torch.no_grad():
        weight.add_(1.0)  # the next step changes the live tensors while the write may still run
    writer.wait()
    saved = torch.load(tmp_path / "resume" / "last.ckpt", weights_only=False)
    assert torch.equal(saved["state_dict"]["net.weight"], before)
    assert saved["optimizer_states"] and saved["epoch"] == trainer.current_epoch  # resumable: optimizer and loops too
    assert writer.written == 1 and not (tmp_path / "resume" / "last.ckpt.tmp").exists()


def test_a_failed_write_is_raised_on_the_training_thread(tmp_path):
    trainer = _fitted()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.save(trainer, blocker / "last.ckpt")  # its folder cannot be made
    with pytest.raises(RuntimeError, match="writing a checkpoint failed"):
        writer.wait()
    writer.wait()  # raised once


def test_every_n_epochs_names_the_epoch_ends():
    schedule = Schedule(every_s=60.0, every_n_epochs=3)
    assert [e for e in range(9) if schedule.due_at_epoch_end(e)] == [2, 5, 8]
    assert not schedule.due_in_epoch()  # an epoch count means epoch ends only


def test_by_time_the_first_epoch_end_is_due_then_the_interval():
    schedule = Schedule(every_s=60.0, every_n_epochs=None, epoch_end_s=10.0)
    assert schedule.due_at_epoch_end(0)
    schedule.taken()
    assert not schedule.due_at_epoch_end(1)
    assert not schedule.due_in_epoch()  # not before every_s has passed since the start


def test_a_checkpoint_replaces_the_last_only_after_the_events_before_it_are_sent(tmp_path):
    """A worker killed right after a checkpoint resumes from it: the metrics of the steps it
    covers must already be on the server (the reporter's flush runs first), or they are lost."""
    trainer = _fitted()
    path = tmp_path / "resume" / "last.ckpt"
    path.parent.mkdir()
    path.write_bytes(b"the previous checkpoint")
    seen: list[bytes] = []
    writer = CheckpointWriter(before_publish=lambda: seen.append(path.read_bytes()),
                              after_write=lambda p: seen.append(b"sent"))
    writer.save(trainer, path)
    writer.wait()
    assert seen == [b"the previous checkpoint", b"sent"]
    assert torch.load(path, weights_only=False)["epoch"] == trainer.current_epoch
