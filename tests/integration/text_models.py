"""Modules that take text: a classifier whose toy tokenizer lives in the module, and a tiny
character-level language model with a ``generate`` method. Shipped by value, like models.py."""

from __future__ import annotations

import time

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

LENGTH = 16
POSITIVE = ["great", "good", "nice", "lovely", "excellent", "fun", "superb", "happy"]
NEGATIVE = ["awful", "bad", "terrible", "boring", "poor", "sad", "dull", "ugly"]


def tokenize(text: str) -> torch.Tensor:
    """Characters as ids (0 pads), cut or padded to LENGTH: every row has the same shape."""
    ids = [min(ord(c), 127) for c in text.lower()[:LENGTH]]
    return torch.tensor(ids + [0] * (LENGTH - len(ids)), dtype=torch.long)


class TextClassifier(L.LightningModule):
    labels = ("negative", "positive")

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(128, 32, mode="mean")
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)

    def train_dataloader(self):
        words = POSITIVE + NEGATIVE
        x = torch.stack([tokenize(w) for w in words] * 8)
        y = torch.tensor(([1] * len(POSITIVE) + [0] * len(NEGATIVE)) * 8)
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)

    # -- serving hooks: JSON in, JSON out -------------------------------------
    def decode_request(self, item):
        return tokenize(item["text"])

    def encode_response(self, row):
        probs = row.softmax(-1)
        return {"label": self.labels[int(probs.argmax())], "score": round(float(probs.max()), 6)}


TEXT = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n" * 4


class TinyLM(L.LightningModule):
    """A bigram character model: greedy, so its completions are reproducible.

    A prompt starting with ``slow:`` takes 0.25 s a step and prints each step (the
    replica's log), so a test can count the steps generated after a caller left.
    """

    context_length = 64
    max_new_tokens = 512

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(128, 128)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        logits = self(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 128), ids[:, 1:].reshape(-1))
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)

    def train_dataloader(self):
        ids = torch.tensor([min(ord(c), 127) for c in TEXT])
        windows = ids.unfold(0, 33, 8)
        return DataLoader(TensorDataset(windows), batch_size=8, shuffle=True)

    def generate(self, prompt: str, max_tokens: int = 32):
        if len(prompt) > self.context_length:
            raise ValueError(f"the prompt is {len(prompt)} characters but this model's context is "
                             f"{self.context_length}; shorten it")
        slow = prompt.startswith("slow:")
        last = min(ord(prompt[-1]), 127) if prompt else 10
        for step in range(max_tokens):
            if slow:
                time.sleep(0.25)
                print(f"generate[{prompt}] step {step}", flush=True)
            last = int(self(torch.tensor([last], device=self.device))[0].argmax())
            yield chr(last)
