"""Lightning modules the integration tests ship to the backend.

This file lives beside the tests, not in site-packages: the SDK ships it by
value, as it would a helper module next to a notebook.
"""

from __future__ import annotations

import time
import warnings

import lightning.pytorch as L
import pytorch_lightning
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def regression_data(n: int = 128, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class _RegressorSteps:
    """A linear regressor's steps, for either Lightning package (see Regressor, PLRegressor)."""

    def __init__(self, lr: float = 0.05, step_sleep: float = 0.0, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.step_sleep:
            time.sleep(self.hparams.step_sleep)
        if self.hparams.fail_at_step is not None and self.global_step >= self.hparams.fail_at_step:
            raise ValueError(f"boom at step {self.global_step}")
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return DataLoader(regression_data(), batch_size=16)

    def val_dataloader(self):
        return DataLoader(regression_data(64, seed=1), batch_size=32)


class Regressor(_RegressorSteps, L.LightningModule):
    """Defines its own dataloaders; optional per-step sleep makes it slow on purpose."""


class PLRegressor(_RegressorSteps, pytorch_lightning.LightningModule):
    """The same module written for ``pytorch_lightning``, the package most notebooks import."""


class RegressionData(L.LightningDataModule):
    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(regression_data(), batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(regression_data(64, seed=1), batch_size=32)

    def test_dataloader(self):
        return DataLoader(regression_data(32, seed=2), batch_size=32)


class ScheduledRegressor(L.LightningModule):
    """Uses a datamodule, validation and test steps, an LR scheduler and log_dict."""

    def __init__(self, lr: float = 0.1, gamma: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log_dict({"train_loss": loss, "lr": self.optimizers().param_groups[0]["lr"]})
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=self.hparams.gamma)}


class PrintingCallback(L.Callback):
    """A user callback: its output must reach the run's logs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_train_epoch_end(self, trainer, pl_module):
        print(f"{self.marker} epoch={trainer.current_epoch}", flush=True)


class ChattyModule(L.LightningModule):
    """Logs ``metrics_per_step`` values on every one of ``steps`` steps, as fast as it can."""

    def __init__(self, steps: int = 1000, metrics_per_step: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        values = {f"m{i:02d}": float(batch_idx + i) for i in range(self.hparams.metrics_per_step)}
        if batch_idx == self.hparams.steps - 1:
            self.log_dict(values)  # the run's final metrics
        else:
            # Straight to the loggers (aiaas's among them): Lightning's self.log costs ~0.5 ms a
            # value here, and the points, not Lightning's bookkeeping, are what this module is for.
            for logger in self.loggers:
                logger.log_metrics(values, step=batch_idx)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(self.hparams.steps, 2)), batch_size=1)


class SlowPredictor(Regressor):
    """Serving takes ``predict_sleep`` seconds a batch: for backpressure tests."""

    def __init__(self, predict_sleep: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()

    def predict_step(self, batch, batch_idx=0):
        time.sleep(self.hparams.predict_sleep)
        return self(batch)


class WarningRegressor(Regressor):
    """Warns from the user's own code on every step (a log should show it once)."""

    def training_step(self, batch, batch_idx):
        warnings.warn("learning rate looks high for this data", UserWarning)
        return super().training_step(batch, batch_idx)


def digits_data(n: int = 256, seed: int = 0) -> TensorDataset:
    """Digits-shaped rows (64 pixel values in [0, 1]) with labels, made up: no dataset needed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 64, generator=g)
    return TensorDataset(x, (x[:, :10].argmax(1)))


class DigitsMLP(L.LightningModule):
    """The digits-style MLP the serving optimisations are tested on (64 pixels in, 10 logits out)."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))
        self.example_input_array = digits_data(32, seed=3).tensors[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        return DataLoader(digits_data(), batch_size=64)


class BranchyMLP(DigitsMLP):
    """Data-dependent control flow: ONNX export cannot capture which branch a batch takes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if out.sum() > 0:
            return out
        return -out


class MonitoredRegressor(Regressor):
    """Trains on ``rows`` rows (drift needs a real training sample); serving sleeps
    ``predict_sleep`` seconds a batch, so load makes its latency climb."""

    def __init__(self, rows: int = 2048, predict_sleep: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()

    def predict_step(self, batch, batch_idx=0):
        time.sleep(self.hparams.predict_sleep)
        return self(batch)

    def train_dataloader(self):
        return DataLoader(regression_data(self.hparams.rows), batch_size=256, shuffle=True)


class LargeCheckpoint(L.LightningModule):
    """A checkpoint of about 24 MB (weights and Adam's two moments), saved by Lightning's own
    ModelCheckpoint; on_train_end prints the files its checkpoint folder holds then."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(1024, 2048)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters())

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 1024)), batch_size=4)

    def on_train_end(self) -> None:
        import os

        folder = self.trainer.checkpoint_callback.dirpath
        print("CHECKPOINT_FOLDER", sorted(os.listdir(folder)), flush=True)
