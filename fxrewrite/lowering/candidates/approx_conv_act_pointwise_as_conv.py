"""approx-conv-act-pointwise-as-conv (APPROXIMATE, needs calibration data): SESR's collapse with the
activation removed.

A k x k conv K (C_in -> E, stride s) followed by an activation a and a 1x1 conv P (E -> C_out),
batch norms folded, the residual where there is one (EfficientNetV2's fused MBConv),
    y = P(a(K x)) [+ x],
becomes one k x k conv from C_in to C_out with no activation,
    y' = W * x + b [+ x].
Without a, K and P compose exactly: W[o,i](v) = sum_e P[o,e] K[e,i](v), b = P b_K + p (the
collapsible linear blocks of SESR, which train wide and deploy narrow); that is the initialisation.
With a there is no exact form: the block is distilled label-free by least squares on the teacher
block's own input and output over calibration inputs, the optimum for a block linear in its
weights, and judged on held-out inputs. It pays where E is wide: k^2 C_in C_out MACs instead of
k^2 C_in E + E C_out, one tensor of width E fewer, one activation fewer; the restructuring planner
(fxrewrite/lowering/restructure.py) takes it only where the target's cost says so and the accuracy
budget allows.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from fxrewrite.ir import op_view
from fxrewrite.lowering.candidates.blocks import Collapsible, collapsible, conv_act_pointwise, weights_of
from fxrewrite.lowering.candidates.base import BlockRewrite
from fxrewrite.lowering.candidates.collapsed import CollapsedBlock

NAME = "approx-conv-act-pointwise-as-conv"


def find_conv_act_pointwise(gm: fx.GraphModule) -> list[Collapsible]:
    """Every k x k conv -> activation -> 1x1 conv of `gm` (k odd, at least 3; see the module docstring)."""
    found = []
    for project in gm.graph.nodes:
        shape = conv_act_pointwise(project, "dense")
        if shape is None or shape[2] < 3:
            continue
        _, conv, k, stride = shape
        block = collapsible(NAME, op_view(conv).inputs[0], (conv, project), nn.Identity(), k, stride, composed_conv)
        if block is not None:
            found.append(block)
    return found


def composed_conv(block: Collapsible) -> tuple[torch.Tensor, torch.Tensor] | None:
    """W = P K, b = P b_K + p (module docstring)."""
    weights = weights_of(block)
    if weights is None:
        return None
    (conv, bias), (project, project_bias) = weights
    pointwise = project[:, :, 0, 0]
    return torch.einsum("oe,eiuv->oiuv", pointwise, conv).float(), (pointwise @ bias + project_bias).float()


CANDIDATE = BlockRewrite(NAME, find_conv_act_pointwise, CollapsedBlock)
