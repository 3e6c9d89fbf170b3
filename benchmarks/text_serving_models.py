"""The text models of bench_streaming.py: a classifier with its tokenizer in the module, and a
small character-level transformer whose ``generate`` costs about a millisecond a piece."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

LENGTH = 32


def tokenize(text: str) -> torch.Tensor:
    ids = [min(ord(c), 127) for c in text.lower()[:LENGTH]]
    return torch.tensor(ids + [0] * (LENGTH - len(ids)), dtype=torch.long)


class TextClassifier(L.LightningModule):
    labels = ("negative", "positive")

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, 64)
        self.body = nn.Sequential(nn.Linear(64 * LENGTH, 256), nn.ReLU(), nn.Linear(256, 2))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(ids).flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        x = torch.stack([tokenize("great"), tokenize("awful")])
        return DataLoader(TensorDataset(x, torch.tensor([1, 0])), batch_size=2)

    def decode_request(self, item):
        return tokenize(item["text"])

    def encode_response(self, row):
        probs = row.softmax(-1)
        return {"label": self.labels[int(probs.argmax())], "score": float(probs.max())}


class CharTransformer(L.LightningModule):
    """Two causal self-attention layers over the last ``context`` characters; greedy decoding."""

    context = 64
    max_new_tokens = 1024

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, width)
        self.position = nn.Embedding(self.context, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 128)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=ids.device)
        x = self.embed(ids) + self.position(torch.arange(n, device=ids.device))
        return self.head(self.body(x, mask=mask, is_causal=True))

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        logits = self(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 128), ids[:, 1:].reshape(-1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randint(0, 128, (8, 33))), batch_size=8)

    def generate(self, prompt: str, max_tokens: int = 64):
        if len(prompt) > self.context:
            raise ValueError(f"the prompt is {len(prompt)} characters; the context is {self.context}")
        ids = [min(ord(c), 127) for c in prompt] or [10]
        for _ in range(max_tokens):
            window = torch.tensor([ids[-self.context:]], device=self.device)
            nxt = int(self(window)[0, -1].argmax())
            ids.append(nxt)
            yield chr(nxt)
