"""approx-inverted-residual-as-collapsed-block (APPROXIMATE, needs calibration data): RAN-e's collapse.

An inverted residual (MobileNetV2/V3, EfficientNet), with its batch norms folded,
    y = P(a2(D(a1(E x)))) [+ x],   E: 1x1 expand, D: k x k depthwise (stride s), P: 1x1 project,
    a1, a2 activations, optionally a squeeze-and-excitation gate g(.) * before P,
becomes Restructurable Activation Networks' collapsed block
    y' = W * a(x) + b [+ x],   W: one dense k x k conv (stride s) from C_in to C_out,
one activation (the block's own first one, a = a1) instead of two, and no expanded tensor. Without
the activations, E, D and P compose into exactly such a conv, W[o,i](v) = sum_e P[o,e] D[e](v)
E[e,i] and b = P(d + e sum_v D(v)) + p (as collapse-linear-convs computes; away from the border):
that is the collapsed block's initialisation. With the activations there is no exact form, so the
block is then distilled on the calibration data, label-free: the teacher block's own input x and
output y give W, b = argmin ||unfold(a(x)) [W; b] - (y [- x])||^2, which for a block linear in its
weights is the training optimum, solved in closed form (a small ridge keeps it well posed), and
judged on held-out inputs against the initialisation. The residual is kept exactly where
the teacher block had it (stride 1, C_in = C_out). The restructuring planner
(fxrewrite/lowering/restructure.py) applies it only with calibration data, only where the target's
cost says the collapsed block is cheaper, and only within the accuracy budget; it is no pattern pass.
"""

from __future__ import annotations

import torch
from torch import fx

from fxrewrite.ir import op_view
from fxrewrite.lowering.candidates.blocks import (Collapsible, activation_module, before_norm, collapsible,
                                                  conv_act_pointwise, gated_input, is_conv, weights_of)
from fxrewrite.lowering.candidates.base import BlockRewrite
from fxrewrite.lowering.candidates.collapsed import CollapsedBlock

NAME = "approx-inverted-residual-as-collapsed-block"


def find_inverted_residuals(gm: fx.GraphModule) -> list[Collapsible]:
    """Every inverted residual of `gm` (see the module docstring), in graph order."""
    found = []
    for project in gm.graph.nodes:
        shape = conv_act_pointwise(project, "depthwise", gated_input)
        if shape is None:
            continue
        second, depthwise, k, stride = shape
        first = op_view(depthwise).inputs[0]
        expand = before_norm(op_view(first).inputs[0]) if activation_module(first) is not None else first
        if is_conv(expand, "dense", (1, 1)) and op_view(expand).attrs["stride"] == (1, 1):
            x, activation = op_view(expand).inputs[0], activation_module(first)
        else:  # no expansion (MobileNetV2's first block): the depthwise conv reads the block's input
            x, activation, expand = first, activation_module(second), first
        convs = ((expand,) if expand is not x else ()) + (depthwise, project)
        block = collapsible(NAME, x, convs, activation, k, stride, composed_linear_map)
        if block is not None:
            found.append(block)
    return found


def composed_linear_map(block: Collapsible) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The dense conv E, D and P compute without their activations and gate (module docstring)."""
    weights = weights_of(block)
    if weights is None:
        return None
    (depthwise, d), (project, p) = weights[-2:]
    taps, projected = depthwise[:, 0], project[:, :, 0, 0]  # (C_e, k, k), (C_out, C_e)
    if len(weights) == 3:
        (expand, e) = weights[0]
        weight = torch.einsum("oe,euv,ei->oiuv", projected, taps, expand[:, :, 0, 0])
        inner = d + e * taps.sum((1, 2))
    else:  # no expansion: the depthwise conv reads the block's input
        weight, inner = torch.einsum("oe,euv->oeuv", projected, taps), d
    return weight.float(), (projected @ inner + p).float()


CANDIDATE = BlockRewrite(NAME, find_inverted_residuals, CollapsedBlock)
