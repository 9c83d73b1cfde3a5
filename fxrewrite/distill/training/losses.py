"""Arch-Net's training-only helpers: they shape the blockwise loss and never enter the lowered graph.

Teacher attention: a squeeze-and-excitation style gate from the teacher's feature map,
g_c = C * softmax_c(mean_hw |T_c| / tau), applied to both the student's and the teacher's map in
the loss, so channels where the teacher is active weigh more; the gates average to 1. It has no
parameters: a learned gate could lower the loss by ignoring hard channels.

Residual feature adaptation: A(S) = S + conv1x1(relu(conv3x3(relu(conv1x1(S))))) (Linear layers
for vectors and tokens), last layer zero-initialised, between the student's output and the
blockwise loss: it absorbs a small mismatch of the student's (quantized) features during the
blockwise phase; the stitched fine-tuning then trains the students without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_TEMPERATURE = 1.0


def teacher_attention(teacher: torch.Tensor) -> torch.Tensor | float:
    """The per-channel gate of an NCHW teacher map, shaped (N, C, 1, 1); 1.0 for other ranks."""
    if teacher.dim() != 4:
        return 1.0
    squeezed = teacher.abs().mean(dim=(2, 3))
    squeezed = squeezed / squeezed.mean(dim=1, keepdim=True).clamp_min(1e-8)
    return (teacher.shape[1] * torch.softmax(squeezed / ATTENTION_TEMPERATURE, dim=1))[:, :, None, None]


class FeatureAdapter(nn.Module):
    """Residual feature adaptation for one output (see the module docstring)."""

    def __init__(self, like: torch.Tensor):
        super().__init__()
        channels = like.shape[1] if like.dim() == 4 else like.shape[-1]
        hidden = max(channels // 2, 4)
        if like.dim() == 4:
            self.body = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        else:
            self.body = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        with torch.no_grad():
            self.body[-1].weight.zero_()
            self.body[-1].bias.zero_()

    def forward(self, student: torch.Tensor) -> torch.Tensor:
        return student + self.body(student)


def normalized_mse(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """MSE divided by the teacher's variance, so that blocks of any scale weigh alike. A teacher output
    without the batch (batch 1: the same tensor for every sample, as maxvit's position tables) is
    compared with each sample's."""
    return F.mse_loss(*torch.broadcast_tensors(got, want)) / want.detach().var().clamp_min(1e-8)


def block_loss(student: torch.Tensor, teacher: torch.Tensor, adapter: FeatureAdapter | None) -> torch.Tensor:
    """The blockwise distillation loss of one region output: gated by the teacher's attention."""
    adapted = adapter(student) if adapter is not None else student
    gate = teacher_attention(teacher)
    return normalized_mse(gate * adapted, gate * teacher)
