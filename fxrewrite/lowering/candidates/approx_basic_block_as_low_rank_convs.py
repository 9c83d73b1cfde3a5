"""approx-basic-block-as-low-rank-convs (APPROXIMATE, needs calibration data): a ResNet basic block
deeper and narrower, RAN-i's trade for blocks without an expansion.

A basic block with an identity skip (ResNet-18/34; batch norms folded, stride 1, C_in = C_out = C),
    y = K2 * a(K1 * x) + x,   K1, K2: k x k dense convs C -> C,
becomes
    y' = B2 (A2 * a(B1 (A1 * x))) + x,   A_i: k x k conv C -> r,  B_i: 1x1 conv r -> C,  r = C / 2,
each conv split into a narrow k x k conv and a 1x1 conv: per output pixel k^2 C r + r C MACs per
conv instead of k^2 C^2 (10/18 for 3x3 at r = C/2), twice as many layers, the same activations.

Initialisation from the teacher: each K reshaped to the matrix M (C x C k^2) is factored by its
singular value decomposition, M = U S V^T, and truncated to its r largest singular values,
A = S_r^1/2 V_r^T and B = U_r S_r^1/2 (bias on B): the best rank-r approximation of each conv
(Eckart-Young), exact where K's rank is at most r. The truncated convs compose with the activation
between them, so there is no closed form for the block: it is then distilled label-free by Adam on
the mean squared error to the teacher block's own output over calibration inputs, and judged on
held-out inputs against that initialisation. The restructuring planner
(fxrewrite/lowering/restructure.py) applies it only where the target's cost says the split convs
are cheaper and the accuracy budget allows.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from fxrewrite.ir import op_view
from fxrewrite.lowering.candidates.base import BlockRewrite
from fxrewrite.lowering.candidates.blocks import (Collapsible, activation_module, before_norm, collapsible,
                                                  same_padded, weights_of)
from fxrewrite.lowering.candidates.fitting import fit_by_adam

NAME = "approx-basic-block-as-low-rank-convs"
#: the narrow convs keep this share of the block's channels
RANK_SHARE = 2


def _kernel_at_stride_1(conv: fx.Node) -> int | None:
    """k where `conv` is a dense k x k conv (k odd) at stride 1 with 'same' padding, else None."""
    found = same_padded(conv, "dense")
    return found[0] if found is not None and found[1] == 1 else None


def find_basic_blocks(gm: fx.GraphModule) -> list[Collapsible]:
    """Every k x k conv -> activation -> k x k conv -> + x of `gm` with an identity skip, in graph order."""
    found = []
    for second in gm.graph.nodes:
        kernel = _kernel_at_stride_1(second)
        if kernel is None:
            continue
        activated = op_view(second).inputs[0]
        activation = activation_module(activated)
        first = before_norm(op_view(activated).inputs[0]) if activation is not None else None
        if first is None or _kernel_at_stride_1(first) != kernel:
            continue
        block = collapsible(NAME, op_view(first).inputs[0], (first, second), activation, kernel, 1)
        if block is not None and block.residual:
            found.append(block)
    return found


def low_rank_pair(conv: tuple[torch.Tensor, torch.Tensor] | None, c_in: int, c_out: int, kernel: int,
                  rank: int) -> nn.Sequential:
    """A k x k conv c_in -> rank, then a 1x1 conv rank -> c_out: the best rank-`rank` approximation of
    `conv` (weight, bias) by its singular values, or random where it is None."""
    pair = nn.Sequential(nn.Conv2d(c_in, rank, kernel, padding=kernel // 2, bias=False), nn.Conv2d(rank, c_out, 1))
    if conv is not None:
        weight, bias = conv
        u, s, vh = torch.linalg.svd(weight.reshape(c_out, -1), full_matrices=False)
        root = s[:rank].sqrt()
        with torch.no_grad():
            pair[0].weight.copy_((root[:, None] * vh[:rank]).reshape(rank, c_in, kernel, kernel).float())
            pair[1].weight.copy_((u[:, :rank] * root).reshape(c_out, rank, 1, 1).float())
            pair[1].bias.copy_(bias.float())
    return pair


class LowRankBasicBlock(nn.Module):
    """y = B2(A2(a(B1(A1(x))))) + x (module docstring)."""

    def __init__(self, block: Collapsible):
        super().__init__()
        weights = weights_of(block) or [None, None]
        self.rank = max(1, block.out_ch // RANK_SHARE)
        self.first = low_rank_pair(weights[0], block.in_ch, block.out_ch, block.kernel, self.rank)
        self.act = copy.deepcopy(block.activation)
        self.second = low_rank_pair(weights[1], block.out_ch, block.out_ch, block.kernel, self.rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.act(self.first(x))) + x

    def signature(self) -> tuple:
        return (self.rank, type(self.act).__name__)

    def initialise(self, inputs: torch.Tensor) -> None:
        """Initialised from the teacher's truncated singular value decompositions, at construction."""

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        fit_by_adam(self, inputs, outputs)


def why_too_narrow(block: Collapsible) -> str:
    return "" if block.out_ch >= 2 * RANK_SHARE else f"{block.out_ch} channels are too few to split"


CANDIDATE = BlockRewrite(NAME, find_basic_blocks, LowRankBasicBlock, why_too_narrow)
