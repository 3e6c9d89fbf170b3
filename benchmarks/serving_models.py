"""The two models the serving benchmark serves, with random weights.

An MLP (overhead-bound) and a CIFAR-style ResNet-18 on 3x32x32 inputs
(compute-bound), written here because torchvision does not install beside
this machine's torch wheel.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class _Servable(L.LightningModule):
    """Trains for one step at lr=0: the weights stay random; we only need a run to deploy."""

    input_shape: tuple[int, ...] = ()

    def training_step(self, batch, batch_idx):
        return self(batch[0]).float().pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, *self.input_shape)), batch_size=2)


class MLP(_Servable):
    input_shape = (64,)

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet18(_Servable):
    input_shape = (3, 32, 32)

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
            cin = cout
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class _CausalBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class CharTransformer(_Servable):
    """A tiny character-level language model: 64 token ids in, next-character logits out."""

    input_shape = (64,)
    vocab = 96

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, self.input_shape[0], dim) * 0.02)
        self.blocks = nn.Sequential(*[_CausalBlock(dim, heads) for _ in range(layers)])
        self.head = nn.Linear(dim, self.vocab)
        self.example_input_array = torch.randint(0, self.vocab, (8, *self.input_shape),
                                                 generator=torch.Generator().manual_seed(0))

    def forward(self, ids):
        x = self.blocks(self.embed(ids) + self.pos[:, : ids.shape[1]])
        return self.head(x[:, -1])

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, *self.input_shape, dtype=torch.long)), batch_size=2)


MODELS = {"mlp": MLP, "resnet18": ResNet18, "char-transformer": CharTransformer}
