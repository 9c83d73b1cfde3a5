"""Small models for tests, loadable as MODEL specs (``tests/zoo.py:tiny_cnn``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 7, padding=3), nn.ReLU(),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class GeluHead(TinyCNN):
    """TinyCNN with a GELU on the pooled features: a node no exact pass rewrites on the built-in chips."""

    def forward(self, x):
        return self.head(nn.functional.gelu(self.features(x).mean((2, 3))))


class LegalOnArchnet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.relu(self.conv(x)))


class ShapeBranch(nn.Module):
    """Control flow on a shape: symbolic tracing fails, torch.export specializes and succeeds."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.shape[-1] > 4:
            return torch.relu(self.conv(x))
        return self.conv(x)


class ValueBranch(nn.Module):
    """Control flow on tensor values: neither frontend can capture it."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


def tiny_cnn() -> nn.Module:
    return TinyCNN()


def gelu_head() -> nn.Module:
    return GeluHead()


def legal_on_archnet() -> nn.Module:
    return LegalOnArchnet()


def value_branch() -> nn.Module:
    return ValueBranch()


def not_a_module() -> str:
    return "a string"


def calibration_pairs():
    """(input, label) pairs, as a dataset would yield them: `--calib zoo:calibration_pairs`."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.rand(3, 17, 19, generator=generator), index % 10) for index in range(40)]
