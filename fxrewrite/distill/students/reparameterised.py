"""The re-parameterised student (RepVGG), for a residual block whose teacher form pays for its skip.

On a chip without add, a residual block's teacher form keeps the skip by reading [x | h] in its
last conv (x1.5 a ResNet basic block's cost). This student has no skip once deployed: `depth` 3x3
conv layers at the teacher's width, with ReLU between them, the first of stride 2 where the block
halves its map. While it trains, each layer is the sum of three branches with their own batch norms
(RepVGG): 3x3 conv + BN, 1x1 conv + BN, and, where the layer keeps its shape, a BN of its input
(the skip the deployed form no longer has). Deployed (`deployed`), each layer is one 3x3 conv, exact
in eval mode: a BN (mean m, variance v, scale g, shift b) after a conv of kernel K and bias c is the
conv of kernel K g / sqrt(v + eps) and bias (c - m) g / sqrt(v + eps) + b; a 1x1 kernel is the 3x3
kernel with only its centre tap; the input's BN is the 3x3 kernel of centre tap g / sqrt(v + eps) on
its own channel and zero elsewhere; a conv is linear in its kernel, so the three kernels and biases
add. So a basic block becomes two plain 3x3 convs, what the teacher's own cost.

It starts from the teacher's 3x3 convs where shapes and strides match (fxrewrite.distill.students.base).
Synthesis offers it where the region's exact teacher form costs more than the student allowance
and this student fits it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.distill.students.base import Student

#: layers of a re-parameterised student: a basic block's two convs
DEPTH = 2
LABEL = "{} x re-parameterised conv3x3 of {} (3x3 + 1x1 + identity branches in training, one 3x3 deployed)"


def _fused(kernel: torch.Tensor, bias: torch.Tensor | None, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias of a conv followed by `norm` in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    return kernel * scale[:, None, None, None], (bias if bias is not None else 0) * scale + shift


class RepLayer(nn.Module):
    """One layer: bn(conv3x3 x) + bn(conv1x1 x) [+ bn(x) where the shape is kept]."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.wide = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1), nn.BatchNorm2d(out_ch))
        self.point = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0), nn.BatchNorm2d(out_ch))
        self.identity = nn.BatchNorm2d(out_ch) if in_ch == out_ch and stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.wide(x) + self.point(x)
        return y + self.identity(x) if self.identity is not None else y

    @torch.no_grad()
    def deployed(self) -> nn.Conv2d:
        """The one 3x3 conv this layer computes in eval mode (module docstring)."""
        wide, point = self.wide[0], self.point[0]
        kernel, bias = _fused(wide.weight, wide.bias, self.wide[1])
        centre, centre_bias = _fused(F.pad(point.weight, (1, 1, 1, 1)), point.bias, self.point[1])
        kernel, bias = kernel + centre, bias + centre_bias
        if self.identity is not None:
            eye = torch.zeros_like(kernel)
            eye[range(len(eye)), range(len(eye)), 1, 1] = 1.0
            same, same_bias = _fused(eye, None, self.identity)
            kernel, bias = kernel + same, bias + same_bias
        conv = nn.Conv2d(wide.in_channels, wide.out_channels, 3, self.stride, 1)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        return conv


class RepStudent(Student):
    """`depth` re-parameterised layers of `width` channels with ReLU between them, the first of stride
    `stride`, ending in `out_ch` channels, and in a ReLU where `relu_last` (a block that ends in one)
    (module docstring)."""

    def __init__(self, in_ch: int, out_ch: int, width: int, stride: int, relu_last: bool, depth: int = DEPTH):
        super().__init__()
        self.relu_last = relu_last
        chans = [in_ch] + [width] * (depth - 1) + [out_ch]
        self.layers = nn.ModuleList(RepLayer(chans[i], chans[i + 1], stride if i == 0 else 1) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            x = torch.relu(x) if index < len(self.layers) - 1 or self.relu_last else x
        return x

    def deployed(self) -> nn.Sequential:
        convs = [layer.deployed() for layer in self.layers]
        return nn.Sequential(*[m for conv in convs[:-1] for m in (conv, nn.ReLU())], convs[-1],
                             *([nn.ReLU()] if self.relu_last else []))


def reparameterised_student(inputs: list[torch.Tensor], output: torch.Tensor) -> tuple[str, RepStudent] | None:
    """The re-parameterised student for a region of one image-map input reaching its image-map output
    at the same size or halved (a residual block), at the output's width, ending in a ReLU where the
    output is never negative; None for any other region."""
    if len(inputs) != 1 or inputs[0].dim() != 4 or output.dim() != 4:
        return None
    (_, c, h, w), (_, out_ch, oh, ow) = inputs[0].shape, output.shape
    if (oh, ow) == (h, w):
        stride = 1
    elif (oh, ow) == ((h + 1) // 2, (w + 1) // 2):
        stride = 2
    else:
        return None
    # the teacher's block ends in a ReLU where its recorded output never goes below 0
    return LABEL.format(DEPTH, out_ch), RepStudent(c, out_ch, out_ch, stride, bool((output >= 0).all()))
