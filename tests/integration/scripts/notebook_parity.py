"""Run as __main__, like a notebook: the module below exists only in this process.

Trains it remotely through aiaas and in-process with the same seed, and prints
both runs' logged metrics as JSON. Connection from AIAAS_URL / AIAAS_API_KEY.
"""

import json

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import aiaas


class NotebookModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def _data(self, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(96, 6, generator=g)
        return DataLoader(TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()), batch_size=16)

    def train_dataloader(self):
        return self._data(0)

    def val_dataloader(self):
        return self._data(1)


class Recorder(L.pytorch.loggers.Logger if hasattr(L, "pytorch") else L.loggers.Logger):
    name, version = "recorder", "0"

    def __init__(self):
        super().__init__()
        self.points = []

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.points += [[k, float(v), step] for k, v in sorted(metrics.items()) if k != "epoch"]


if __name__ == "__main__":
    kwargs = dict(max_epochs=3, accelerator="cpu")
    torch.manual_seed(0)
    remote = aiaas.connect().train(NotebookModule(), name="notebook-parity", **kwargs).wait()
    remote_points = [[p.name, p.value, p.step] for p in remote.metrics()]

    torch.manual_seed(0)
    recorder = Recorder()
    trainer = L.Trainer(logger=recorder, log_every_n_steps=1, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, **kwargs)
    trainer.fit(NotebookModule())
    local_final = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(json.dumps({"remote_final": remote.final_metrics, "local_final": local_final,
                      "remote_points": sorted(remote_points, key=lambda p: (p[2], p[0])),
                      "local_points": sorted(recorder.points, key=lambda p: (p[2], p[0])),
                      "module_of_class": NotebookModule.__module__}))
