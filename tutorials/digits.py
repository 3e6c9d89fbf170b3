"""The digits model and data the tutorials share (it lives beside the notebooks).

A module next to your notebook travels to the backend by value, like the
classes you define in the notebook itself: the backend never needs it installed.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digit images as (N, 64) floats in [0, 1], and their labels."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: nothing is downloaded

    digits = load_digits()
    return torch.tensor(digits.data, dtype=torch.float32) / 16.0, torch.tensor(digits.target)


class DigitsData(L.LightningDataModule):
    """The first 1,400 shuffled images train, the remaining 397 validate."""

    def setup(self, stage: str | None = None) -> None:
        x, y = load_digits_tensors()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        self.train_set = TensorDataset(x[order[:1400]], y[order[:1400]])
        self.val_set = TensorDataset(x[order[1400:]], y[order[1400:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=64, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)


class DigitsClassifier(L.LightningModule):
    """A two-layer perceptron: 64 pixels in, 10 logits out."""

    def __init__(self, hidden: int = 64, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
