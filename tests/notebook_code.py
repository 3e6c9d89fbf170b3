"""Notebook cells shared by the kernel and browser tests."""

from __future__ import annotations

import textwrap


def model_cell(class_name: str = "NotebookModel", samples: int = 80, batch_size: int = 16,
               step_sleep: float = 0.0) -> str:
    """A cell defining a small LightningModule in the notebook (so in ``__main__``)."""
    return textwrap.dedent(f"""
        import time
        import lightning.pytorch as L
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        class {class_name}(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                time.sleep({step_sleep})
                x, y = batch
                loss = nn.functional.mse_loss(self.net(x), y)
                self.log("train_loss", loss)
                return loss

            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.05)

            def _data(self):
                g = torch.Generator().manual_seed(0)
                x = torch.randn({samples}, 4, generator=g)
                return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size={batch_size})

            def train_dataloader(self):
                return self._data()

            def val_dataloader(self):
                return self._data()
    """)
