"""How a replacement is fitted to its teacher block, label-free, on the block's own input x and
output y over calibration inputs: by least squares where it is linear in its weights (a collapse's
one conv), by Adam on the relative mean squared error where it is not (a pair, a gated collapse)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: ridge of the least-squares fit, relative to the mean diagonal of the normal matrix
RIDGE = 1e-4
#: rows (output pixels) the fit reads at most
FIT_ROWS = 50_000
#: Adam steps, batch size and learning rate of the fit by gradient
STEPS = 300
BATCH = 32
LR = 2e-3


@torch.no_grad()
def fit_least_squares(conv: nn.Conv2d, features: torch.Tensor, wanted: torch.Tensor) -> None:
    """Set `conv` to W, b = argmin ||unfold(features) [W; b] - wanted||^2 + ridge ||W||^2: the optimum
    for a conv that reads `features` and should give `wanted` (a small ridge keeps it well posed)."""
    patches = F.unfold(features, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
    goal = wanted.flatten(2).transpose(1, 2).reshape(-1, wanted.shape[1]).double()
    if rows.shape[0] > FIT_ROWS:
        kept = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:FIT_ROWS]
        rows, goal = rows[kept], goal[kept]
    rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], 1)
    normal = rows.T @ rows
    normal += torch.eye(normal.shape[0], dtype=normal.dtype) * RIDGE * normal.diagonal().mean()
    solution = torch.linalg.solve(normal, rows.T @ goal)  # (C_in k k + 1, C_out)
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape).float())
    conv.bias.copy_(solution[-1].float())


def fit_by_adam(module: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
    """Adam on the mean squared error of `module(inputs)` to `outputs`, relative to their variance,
    with a half-cosine learning rate to zero so that the last steps settle."""
    optimizer = torch.optim.Adam(module.parameters(), LR)
    scale = outputs.var().clamp_min(1e-12)
    generator = torch.Generator().manual_seed(0)
    module.train()
    for step in range(STEPS):
        rows = torch.randint(len(inputs), (BATCH,), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * step / STEPS))
        optimizer.zero_grad()
        (F.mse_loss(module(inputs[rows]), outputs[rows]) / scale).backward()
        optimizer.step()
    module.eval()
