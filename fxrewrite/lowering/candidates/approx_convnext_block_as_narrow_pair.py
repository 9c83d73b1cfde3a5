"""approx-convnext-block-as-narrow-pair (APPROXIMATE, needs calibration data): RAN-implicit's
deeper and narrower for ConvNeXt blocks, with fewer non-linear units.

A ConvNeXt block of width C and expansion E (4C in ConvNeXt; channels last between the permutes),
    y = x + g * L2(a(L1(LN(D x)))),   D: k x k depthwise, LN: layer norm over channels,
    L1: C -> E, a: GELU, L2: E -> C, g: the layer scale,
becomes two such blocks of expansion E' = 8 ceil(E / 32) (C for ConvNeXt's 4C), each with its own skip,
    h = x + g1 * L2'(a(L1'(LN1(D1 x)))),   y' = h + g2 * L2''(a(L1''(LN2(D2 h)))).
Per output pixel the pointwise layers cost 2 C E' twice, 4 C^2 against 8 C^2, the depthwise convs
2 k^2 C against k^2 C: (2 k^2 C + 4 C^2) / (k^2 C + 8 C^2) of the MACs, x0.74 at C = 32 and k = 7,
x0.59 at ConvNeXt-T's 96, toward RAN-i's x0.5 as C grows; the non-linear units are 2 E' = 2C
against 4C. NN-Mass (skip width x channel-mixing layers bypassed) never falls: the pair
has the teacher's skip and one more.

Initialisation from the teacher: the first block keeps D, LN and g, and the E' hidden units that
contribute most to the output, |L2[:, e]| mean |a(h_e)| over the calibration inputs, with their L1
rows and L2 columns (exact where the others contribute nothing); the second block starts as the
identity (L2'' = 0) with the teacher's D and a fresh layer norm. There is no closed form with a
GELU in each path: the pair is distilled label-free by Adam on the mean squared error to the teacher
block's own output over the calibration inputs and judged on held-out inputs against that start.
The restructuring planner (fxrewrite/lowering/restructure.py) takes it only where the target's cost
says the pair is cheaper (on cpu-reference: its latency measured on this CPU) and the accuracy
budget allows.
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.lowering.candidates.base import BlockRewrite
from fxrewrite.lowering.candidates.blocks import Collapsible, activation_module, nodes_between, same_padded
from fxrewrite.lowering.candidates.fitting import BATCH, fit_by_adam
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import constant_operand, conv_weights

NAME = "approx-convnext-block-as-narrow-pair"
#: the pair's expansion is this share of the teacher block's, rounded up to a multiple of CHANNEL_STEP
SHARE = 4
CHANNEL_STEP = 8


def _skip_passthrough(node: fx.Node) -> fx.Node:
    """Back through an eval-mode stochastic depth or dropout, which passes its input."""
    return op_view(node).inputs[0] if op_view(node).kind == "dropout" else node


def _back(node: fx.Node, kind: str) -> fx.Node | None:
    """`node`'s only tensor input where `node` is of `kind`, else None."""
    view = op_view(node)
    return view.inputs[0] if view.kind == kind and view.inputs else None


def _parts(add: fx.Node) -> tuple[fx.Node, tuple[fx.Node, ...], fx.Node, torch.Tensor | None] | None:
    """(x, (D, LN, L1, L2), the GELU's node, the layer scale g or None) of the ConvNeXt block ending
    at `add` (module docstring), or None where `add` ends none."""
    view = op_view(add)
    if view.kind != "add" or len(view.inputs) != 2:
        return None
    for branch, x in (view.inputs, tuple(reversed(view.inputs))):
        scaled = _skip_passthrough(branch)
        gated = constant_operand(op_view(scaled)) if op_view(scaled).kind == "mul" else None
        scale = None if gated is None or isinstance(gated, Decline) else gated[1]
        after = scaled if scale is None else gated[0]
        project = _back(after, "permute")
        activated = _back(project, "linear") if project is not None else None
        expand = op_view(activated).inputs[0] if activated is not None and activation_module(activated) else None
        norm = _back(expand, "linear") if expand is not None else None
        channels_last = _back(norm, "layer_norm") if norm is not None else None
        depthwise = _back(channels_last, "permute") if channels_last is not None else None
        if depthwise is not None and op_view(depthwise).kind == "conv2d" and op_view(depthwise).inputs[0] is x:
            return x, (depthwise, norm, expand, project), activated, scale
    return None


def _convnext_block(add: fx.Node) -> Collapsible | None:
    """The ConvNeXt block ending at `add` as the planner sees it, or None."""
    parts = _parts(add)
    if parts is None:
        return None
    x, layers, hidden, _ = parts
    found, shape = same_padded(layers[0], "depthwise"), tensor_shape(x)
    nodes = nodes_between(x, add) if found is not None and found[1] == 1 else None
    if nodes is None or shape is None or len(shape) != 4:
        return None
    return Collapsible(NAME, x, add, nodes, layers, activation_module(hidden), found[0], 1, shape[1], shape[1], True)


def find_convnext_blocks(gm: fx.GraphModule) -> list[Collapsible]:
    """Every ConvNeXt block of `gm`, in graph order."""
    return [block for node in gm.graph.nodes if (block := _convnext_block(node)) is not None]


def narrow_width(expanded: int) -> int:
    """E' = CHANNEL_STEP ceil(E / (SHARE CHANNEL_STEP))."""
    return CHANNEL_STEP * math.ceil(expanded / (SHARE * CHANNEL_STEP))


class ConvNeXtBlock(nn.Module):
    """y = x + g * L2(a(L1(LN(D x)))), channels last between D and the scale."""

    def __init__(self, channels: int, expanded: int, kernel: int, activation: nn.Module, eps: float):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=eps)
        self.expand = nn.Linear(channels, expanded)
        self.act = activation
        self.project = nn.Linear(expanded, channels)
        self.scale = nn.Parameter(torch.ones(channels, 1, 1))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.expand(self.norm(self.depthwise(x).permute(0, 2, 3, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.project(self.hidden(x)).permute(0, 3, 1, 2)


class ConvNeXtNarrowPair(nn.Module):
    """Two ConvNeXt blocks of a quarter of the teacher block's expansion (module docstring)."""

    def __init__(self, block: Collapsible):
        super().__init__()
        _, (depthwise, norm, first, second), _, scale = _parts(block.output)
        expanded, eps = op_view(first).output_shape[-1], op_view(norm).attrs.get("eps", 1e-5)
        width = narrow_width(expanded)
        self.first = ConvNeXtBlock(block.in_ch, width, block.kernel, block.activation, eps)
        self.second = ConvNeXtBlock(block.in_ch, width, block.kernel, block.activation, eps)
        teacher = ConvNeXtBlock(block.in_ch, expanded, block.kernel, block.activation, eps)
        found = [conv_weights(op_view(n)) for n in (depthwise, norm, first, second)]
        readable = not any(isinstance(f, Decline) or f[1] is None for f in found)
        self.teacher = [teacher] if readable else []  # a plain list: read once by initialise, no parameters
        with torch.no_grad():
            for layer, (weight, bias) in zip((teacher.depthwise, teacher.norm, teacher.expand, teacher.project),
                                             found if readable else ()):
                layer.weight.copy_(weight.reshape(layer.weight.shape)), layer.bias.copy_(bias)
            if scale is not None:
                teacher.scale.copy_(scale.reshape(teacher.scale.shape))
            self.second.project.weight.zero_(), self.second.project.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def signature(self) -> tuple:
        return (self.first.expand.out_features,)

    @torch.no_grad()
    def initialise(self, inputs: torch.Tensor) -> None:
        """The first block from the teacher's hidden units that contribute most on `inputs`, the
        second the identity with the teacher's depthwise conv."""
        if not self.teacher:
            return  # weights computed at run time: the pair keeps its random start
        teacher = self.teacher.pop()
        magnitude = torch.cat([teacher.hidden(batch).abs().mean((1, 2)) for batch in inputs.split(BATCH)]).mean(0)
        contribution = teacher.project.weight.norm(dim=0) * magnitude
        kept = contribution.topk(self.first.expand.out_features).indices.sort().values
        for block in (self.first, self.second):
            block.depthwise.load_state_dict(teacher.depthwise.state_dict())
        self.first.norm.load_state_dict(teacher.norm.state_dict())
        self.first.expand.weight.copy_(teacher.expand.weight[kept])
        self.first.expand.bias.copy_(teacher.expand.bias[kept])
        self.first.project.weight.copy_(teacher.project.weight[:, kept])
        self.first.project.bias.copy_(teacher.project.bias)
        self.first.scale.copy_(teacher.scale)

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        fit_by_adam(self, inputs, outputs)


def why_not_narrowable(block: Collapsible) -> str:
    """Why `block` cannot become a narrow pair, or '' where it can."""
    expanded = op_view(block.convs[2]).output_shape[-1]
    return "" if 2 * narrow_width(expanded) < expanded else f"an expansion of {expanded} is too narrow to split"


CANDIDATE = BlockRewrite(NAME, find_convnext_blocks, ConvNeXtNarrowPair, why_not_narrowable)
