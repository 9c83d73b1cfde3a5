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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import batch_norm_affine, conv_weights

NAME = "approx-inverted-residual-as-collapsed-block"
#: activations a block may use, as modules the collapsed block can hold
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU}
#: ridge of the least-squares fit, relative to the mean diagonal of the normal matrix
RIDGE = 1e-4
#: rows (output pixels) the fit reads at most
FIT_ROWS = 50_000


@dataclass(frozen=True)
class Collapsible:
    """A block a restructuring can collapse into act -> k x k conv (-> + x): its input, its output,
    the nodes between, its convs in order, and the rewrite that found it."""

    rewrite: str
    input: fx.Node
    output: fx.Node
    nodes: tuple[fx.Node, ...]
    convs: tuple[fx.Node, ...]
    activation: nn.Module
    kernel: int
    stride: int
    in_ch: int
    out_ch: int
    residual: bool

    def composed(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The dense conv the block's convs compute without their activations (its initialisation)."""
        return COMPOSERS[self.rewrite](self)


def activation_module(node: fx.Node) -> nn.Module | None:
    view = op_view(node)
    if view.kind in ACTIVATIONS:
        return ACTIVATIONS[view.kind]()
    if view.kind == "hardtanh" and (view.attrs.get("min_val"), view.attrs.get("max_val")) == (0.0, 6.0):
        return nn.ReLU6()
    return None


def is_conv(node: fx.Node, grouping: str, kernel: tuple[int, int] | None = None) -> bool:
    view = op_view(node)
    return (view.kind == "conv2d" and view.attrs.get("grouping") == grouping and view.attrs["dilation"] == (1, 1)
            and (kernel is None or view.attrs["kernel"] == kernel))


def _main_input(node: fx.Node) -> fx.Node:
    """Through a squeeze-and-excitation gate, h * g(h), to h."""
    view = op_view(node)
    if view.kind == "mul" and len(view.inputs) == 2:
        shapes = [tensor_shape(n) for n in view.inputs]
        for candidate, shape in zip(view.inputs, shapes):
            if shape == view.output_shape:
                return candidate
    return node


def nodes_between(start: fx.Node, end: fx.Node) -> tuple[fx.Node, ...] | None:
    """The nodes between `start` and `end` (end included), provided all of them are computed from
    `start` or are constants and none but `end` is read from outside; None otherwise."""
    order = {node: index for index, node in enumerate(end.graph.nodes)}
    inside, stack = {end}, [end]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent is start or parent in inside:
                continue
            if parent.op != "get_attr" and order[parent] < order[start]:
                return None  # reads a tensor from before the block
            inside.add(parent)
            if parent.op != "get_attr":
                stack.append(parent)
    if any(user not in inside for node in inside if node is not end for user in node.users):
        return None
    return tuple(sorted(inside, key=order.__getitem__))


def before_norm(node: fx.Node) -> fx.Node:
    """Back through a batch norm (unfolded, as captured) to the conv it normalises."""
    return op_view(node).inputs[0] if op_view(node).kind == "batch_norm" else node


def after_norm(node: fx.Node) -> fx.Node:
    users = list(node.users)
    return users[0] if len(users) == 1 and op_view(users[0]).kind == "batch_norm" else node


def collapsible(rewrite: str, x: fx.Node, convs: tuple[fx.Node, ...], activation: nn.Module, kernel: int,
                stride: int) -> Collapsible | None:
    """The block from `x` through `convs` (the last a 1x1 projection, its batch norm and the residual
    add where there are), or None where something outside reads inside it."""
    projected = after_norm(convs[-1])
    users = list(projected.users)
    add = users[0] if len(users) == 1 and op_view(users[0]).kind == "add" else None
    residual = add is not None and set(op_view(add).inputs) == {projected, x}
    output = add if residual else projected
    nodes = nodes_between(x, output)
    in_shape, out_shape = tensor_shape(x), tensor_shape(output)
    if nodes is None or in_shape is None or out_shape is None or len(in_shape) != 4:
        return None
    return Collapsible(rewrite, x, output, nodes, convs, activation, kernel, stride, in_shape[1], out_shape[1],
                       residual)


def find_inverted_residuals(gm: fx.GraphModule) -> list[Collapsible]:
    """Every inverted residual of `gm` (see the module docstring), in graph order."""
    found = []
    for project in gm.graph.nodes:
        if not is_conv(project, "dense", (1, 1)) or op_view(project).attrs["stride"] != (1, 1):
            continue
        second = _main_input(op_view(project).inputs[0])
        depthwise = before_norm(op_view(second).inputs[0]) if activation_module(second) is not None else None
        if depthwise is None or not is_conv(depthwise, "depthwise"):
            continue
        dw = op_view(depthwise).attrs
        k = dw["kernel"][0]
        if dw["kernel"] != (k, k) or k % 2 == 0 or dw["stride"][0] != dw["stride"][1] or dw["padding"] != (k // 2,) * 2:
            continue
        first = op_view(depthwise).inputs[0]
        expand = before_norm(op_view(first).inputs[0]) if activation_module(first) is not None else first
        if is_conv(expand, "dense", (1, 1)) and op_view(expand).attrs["stride"] == (1, 1):
            x, activation = op_view(expand).inputs[0], activation_module(first)
        else:  # no expansion (MobileNetV2's first block): the depthwise conv reads the block's input
            x, activation, expand = first, activation_module(second), first
        convs = ((expand,) if expand is not x else ()) + (depthwise, project)
        block = collapsible(NAME, x, convs, activation, dw["kernel"][0], dw["stride"][0])
        if block is not None:
            found.append(block)
    return found


def weights_of(block: Collapsible) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Each conv's weight and bias (float64, zeros for none) with the batch norm after it folded in,
    or None where a weight is computed at run time."""
    weights = []
    for conv in block.convs:
        found = conv_weights(op_view(conv))
        norm = after_norm(conv)
        affine = batch_norm_affine(op_view(norm)) if norm is not conv else None
        if isinstance(found, Decline) or isinstance(affine, Decline):
            return None
        weight, bias = found[0].double(), (found[1].double() if found[1] is not None else
                                           torch.zeros(found[0].shape[0], dtype=torch.float64))
        if affine is not None:
            scale, shift = affine
            weight, bias = weight * scale.reshape(-1, 1, 1, 1), bias * scale + shift
        weights.append((weight, bias))
    return weights


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


class CollapsedBlock(nn.Module):
    """y = conv(act(x)) [+ x]: one activation, one dense k x k conv."""

    def __init__(self, block: Collapsible):
        super().__init__()
        self.act = block.activation
        self.conv = nn.Conv2d(block.in_ch, block.out_ch, block.kernel, block.stride, block.kernel // 2)
        self.residual = block.residual
        composed = block.composed()
        if composed is not None:
            with torch.no_grad():
                self.conv.weight.copy_(composed[0])
                self.conv.bias.copy_(composed[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(x))
        return y + x if self.residual else y

    def signature(self) -> tuple:
        return (type(self.act).__name__,)

    def initialise(self, inputs: torch.Tensor) -> None:
        """Initialised from the composed linear map already, at construction."""

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        fit_least_squares(self, inputs, outputs)


@torch.no_grad()
def fit_least_squares(collapsed: CollapsedBlock, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
    """Set the collapsed conv to the least-squares map from act(x)'s patches to y (- x)."""
    conv = collapsed.conv
    target = outputs - inputs if collapsed.residual else outputs
    patches = F.unfold(collapsed.act(inputs), conv.kernel_size, padding=conv.padding, stride=conv.stride)
    features = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
    wanted = target.flatten(2).transpose(1, 2).reshape(-1, target.shape[1]).double()
    if features.shape[0] > FIT_ROWS:
        rows = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(0))[:FIT_ROWS]
        features, wanted = features[rows], wanted[rows]
    features = torch.cat([features, torch.ones(features.shape[0], 1, dtype=features.dtype)], 1)
    normal = features.T @ features
    normal += torch.eye(normal.shape[0], dtype=normal.dtype) * RIDGE * normal.diagonal().mean()
    solution = torch.linalg.solve(normal, features.T @ wanted)  # (C_in k k + 1, C_out)
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape).float())
    conv.bias.copy_(solution[-1].float())


#: per rewrite, how its block's convs compose (passes that find other blocks add theirs)
COMPOSERS = {NAME: composed_linear_map}
