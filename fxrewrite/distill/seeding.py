"""Generic students started from the teacher: a student layer takes the weights of a teacher layer of
its region where that layer has a legal counterpart of the same shape and stride: a 1x1 conv or
linear goes in the centre of a 3x3, a depthwise conv becomes the diagonal of a dense one, a 3x3 conv
is copied. Larger kernels have no counterpart (a crop is not the same maths) and start from random
weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.ir import op_view
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import block_diagonal, conv_weights


def _dense_3x3(weight: torch.Tensor, groups: int) -> torch.Tensor | None:
    """The dense 3x3 kernel a 1x1 / 3x3, dense or depthwise kernel equals, or None."""
    out_ch, per_group, kh, kw = weight.shape
    if (kh, kw) not in ((1, 1), (3, 3)) or groups not in (1, out_ch) or (groups > 1 and per_group != 1):
        return None
    border = (3 - kh) // 2
    return F.pad(block_diagonal(weight, groups), (border, border, border, border))


def _teacher_kernels(region: fx.GraphModule) -> list[tuple[str, tuple[int, ...], torch.Tensor, torch.Tensor | None]]:
    """(role, stride, weight, bias) of each region layer that has a legal counterpart."""
    found = []
    for node in region.graph.nodes:
        view = op_view(node)
        if view.kind not in ("conv2d", "linear"):
            continue
        weights = conv_weights(view)
        if isinstance(weights, Decline):
            continue
        weight, bias = weights
        if view.kind == "linear":
            found.append(("linear", (1, 1), weight, bias))
            found.append(("conv", (1, 1), _dense_3x3(weight[:, :, None, None], 1), bias))
        elif view.attrs["padding"] == tuple((k - 1) // 2 for k in view.attrs["kernel"]):
            kernel = _dense_3x3(weight, view.attrs["groups"])
            if kernel is not None:
                found.append(("conv", view.attrs["stride"], kernel, bias))
    return found


@torch.no_grad()
def seed_from_teacher(student: nn.Module, region: fx.GraphModule) -> int:
    """Start student layers from teacher layers with a legal counterpart (module policy); returns how many."""
    available = _teacher_kernels(region)
    seeded = 0
    for layer in student.modules():
        role = "conv" if isinstance(layer, nn.Conv2d) else "linear" if isinstance(layer, nn.Linear) else None
        if role is None or (role == "conv" and tuple(layer.padding) != (1, 1)):
            continue
        stride = tuple(layer.stride) if role == "conv" else (1, 1)
        for index, (kind, teacher_stride, weight, bias) in enumerate(available):
            if kind == role and teacher_stride == stride and weight.shape == layer.weight.shape:
                layer.weight.copy_(weight)
                if layer.bias is not None:
                    layer.bias.copy_(bias if bias is not None else torch.zeros_like(layer.bias))
                del available[index]
                seeded += 1
                break
    return seeded
