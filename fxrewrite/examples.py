"""Built-in example models, loadable as MODEL specs (`fxrewrite.examples:tiny_convnext`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, LayerNorm, Linear x4, GELU, Linear, layer scale, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.down(F.gelu(self.up(y)))
        return x + y.permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    """Patchify stem (2x2, stride 2; or a ResNet-style 7x7 one with `stem_kernel=7`), two stages of two
    blocks, LayerNorm + strided downsampling."""

    def __init__(self, dims=(24, 48), stem_kernel: int = 2):
        super().__init__()
        stem = (nn.Conv2d(1, dims[0], 2, stride=2) if stem_kernel == 2
                else nn.Conv2d(1, dims[0], stem_kernel, stride=2, padding=stem_kernel // 2))
        self.stem = nn.Sequential(stem, LayerNorm2d(dims[0]))
        self.stage1 = nn.Sequential(Block(dims[0]), Block(dims[0]))
        self.down = nn.Sequential(LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, stride=2))
        self.stage2 = nn.Sequential(Block(dims[1]), Block(dims[1]))
        self.head_norm = nn.LayerNorm(dims[1])
        self.fc = nn.Linear(dims[1], 10)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(self.head_norm(x.mean(dim=(2, 3))))


def tiny_convnext() -> TinyConvNeXt:
    """A ConvNeXt-style MNIST-sized model (input 1x1x28x28) with random weights."""
    torch.manual_seed(0)
    return TinyConvNeXt().eval()


def digits_inputs() -> torch.Tensor:
    """scikit-learn's bundled handwritten digits (1,797), upsampled to 1x28x28 in [0, 1]; no labels."""
    return _digits()[0]


def _digits(size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits examples need scikit-learn: pip install 'fxrewrite[dev]'") from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images, torch.tensor(digits.target)


def train_classifier(build: Callable[[], nn.Module], images: torch.Tensor, labels: torch.Tensor, epochs: int,
                     train: int = 1400, batch: int = 50) -> nn.Module:
    """`build()` (seeded 0) trained with labels by AdamW on the first `train` images, in eval mode."""
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(epochs):
        for indices in torch.randperm(train).split(batch):
            optimizer.zero_grad()
            F.cross_entropy(model(images[indices]), labels[indices]).backward()
            optimizer.step()
    return model.eval()


def digits_convnext() -> nn.Module:
    """TinyConvNeXt trained (with labels, about 20 s on 2 cores) on the first 1,400 digits: a teacher
    worth distilling, made without downloading anything."""
    return train_classifier(TinyConvNeXt, *_digits(), epochs=20)


class Attention(nn.Module):
    """Multi-head self-attention spelled in the ops a chip's list names: linear, reshape, permute,
    matmul, softmax (nn.MultiheadAttention is one opaque op to a target)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        return self.proj((weights @ v).permute(0, 2, 1, 3).reshape(n, length, dim))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Vision transformer: patchify conv, class token, learned position embeddings, `depth` encoder
    blocks, LayerNorm and a linear head on the class token."""

    def __init__(self, image: int = 8, patch: int = 2, dim: int = 32, depth: int = 2, heads: int = 2,
                 classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.position
        return self.head(self.norm(self.blocks(tokens)[:, 0]))


def digits_vit() -> nn.Module:
    """TinyViT trained (with labels, a few seconds on 2 cores) on the first 1,400 of scikit-learn's
    digits at their own 8x8 size, as 16 patches of 2x2."""
    return train_classifier(TinyViT, *_digits(size=8), epochs=30)


def digits_inputs_8x8() -> torch.Tensor:
    """scikit-learn's bundled digits at their own 1x8x8 size in [0, 1]; no labels."""
    return _digits(size=8)[0]
