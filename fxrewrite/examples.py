"""Built-in example models, loadable as MODEL specs (`fxrewrite.examples:tiny_convnext`)."""

from __future__ import annotations

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


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits examples need scikit-learn: pip install 'fxrewrite[dev]'") from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    return F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False), torch.tensor(digits.target)


def digits_convnext() -> TinyConvNeXt:
    """TinyConvNeXt trained (with labels, about 20 s on 2 cores) on the first 1,400 digits: a teacher
    worth distilling, made without downloading anything."""
    images, labels = _digits()
    torch.manual_seed(0)
    model = TinyConvNeXt()
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(20):
        for batch in torch.randperm(1400).split(50):
            optimizer.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()
