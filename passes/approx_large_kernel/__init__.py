"""approx-large-kernel (APPROXIMATE): a k x k conv as fitted 3x3 stacks. This module's depthwise form
is r fitted branches of m stacked depthwise 3x3 convs; the dense form (one stack at the conv's
output width) is in approx_large_kernel_as_3x3_stack.

Stacking m = (k - 1) / 2 depthwise 3x3 convs gives a k x k kernel that is the full convolution
a_1 * a_2 * ... * a_m of theirs. One such product has about 8m + 1 free values against k^2, so r
branches run side by side (r times the channels: layer 1 maps C to rC, the middle layers are
depthwise on rC, the last sums each channel's r branches back to C) and their kernels are fitted
to K by least squares (Adam on sum_c ||K_c - sum_j a_1j * ... * a_mj||^2). The budget is r = BRANCHES:
the extra channels are bounded by r C, and the MACs are 9 r C (2m - 1) per pixel against k^2 C.
Every layer pads 1, so pixels within m - 1 of the border also differ from the original. The rewrite
note gives each conv's relative kernel error; the lowering report gives the output error.
"""

import torch
import torch.nn.functional as F

from fxrewrite.cost import node_macs, nodes_macs
from fxrewrite.passes.approx_large_kernel.dense_3x3_stack import DENSE_STACK_RULE, same_padded_odd_square
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, register
from fxrewrite.rewrite.building import LARGE_KERNEL_CONV, conv2d

BRANCHES = 4
FIT_STEPS = 400


def _full_conv(kernels: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """Full 2-D convolution of (N, n, n) kernels with (N, 3, 3) kernels -> (N, n + 2, n + 2)."""
    n = kernels.shape[-1]
    out = kernels.new_zeros(kernels.shape[0], n + 2, n + 2)
    for dy in range(3):
        for dx in range(3):
            out = out + F.pad(kernels * small[:, dy, dx, None, None], (dx, 2 - dx, dy, 2 - dy))
    return out


def fit_branches(kernel: torch.Tensor, branches: int, steps: int = FIT_STEPS, seed: int = 0) -> list[torch.Tensor]:
    """Per-layer (C, r, 3, 3) factors whose branch-summed full convolutions approximate (C, k, k)."""
    channels, k = kernel.shape[0], kernel.shape[-1]
    layers = (k - 1) // 2
    generator = torch.Generator().manual_seed(seed)
    scale = kernel.abs().amax(dim=(1, 2)).clamp_min(1e-12) ** (1.0 / layers)
    factors = [(torch.randn(channels, branches, 3, 3, generator=generator) * 0.5 * scale[:, None, None, None])
               .requires_grad_() for _ in range(layers)]
    optimizer = torch.optim.Adam(factors, lr=0.02)
    target = kernel.detach()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((_compose(factors) - target) ** 2).sum()
        loss.backward()
        optimizer.step()
    return [f.detach() for f in factors]


def _compose(factors: list[torch.Tensor]) -> torch.Tensor:
    channels, branches = factors[0].shape[:2]
    product = factors[0].reshape(-1, 3, 3)
    for factor in factors[1:]:
        product = _full_conv(product, factor.reshape(-1, 3, 3))
    return product.reshape(channels, branches, *product.shape[-2:]).sum(dim=1)


def _approximate(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    attrs = conv.attrs
    kh, kw = attrs["kernel"]
    weights = same_padded_odd_square(conv, attrs["grouping"] == "depthwise" and attrs["out_ch"] == attrs["in_ch"],
                                     "depthwise (one output per channel) kernels are fitted")
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    channels, r = attrs["in_ch"], BRANCHES
    factors = fit_branches(weight[:, 0].float(), r)
    error = (torch.linalg.vector_norm(_compose(factors) - weight[:, 0]) / torch.linalg.vector_norm(weight)).item()
    node = conv.inputs[0]
    for index, factor in enumerate(factors):
        last = index == len(factors) - 1
        if index == 0:
            layer = conv2d(factor.reshape(channels * r, 1, 3, 3), None, padding=(1, 1), groups=channels)
        elif last:
            layer = conv2d(factor.reshape(channels, r, 3, 3), bias, stride=attrs["stride"], padding=(1, 1),
                           groups=channels)
        else:
            layer = conv2d(factor.reshape(channels * r, 1, 3, 3), None, padding=(1, 1), groups=channels * r)
        node = rewriter.module(conv.node, "approx_3x3", layer, node)
    rewriter.notes.append(f"{conv.node.name}: APPROXIMATE {kh}x{kw} depthwise -> {r} branches of {len(factors)} "
                          f"3x3 convs, relative kernel error {error:.3g}, MACs {node_macs(conv)} -> {nodes_macs(rewriter.created)}")
    return node


register(PatternPass(
    name="approx-large-kernel",
    summary="APPROXIMATE: k x k conv as fitted 3x3 stacks: depthwise as branches (budget: 4x channels), dense "
            "at its output width",
    rules=RuleSet((Rule("large-depthwise", LARGE_KERNEL_CONV, _approximate), DENSE_STACK_RULE)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("patch-conv-as-linear",),
    exact=False,
))
