"""The blocks restructuring candidates replace: a block as the planner sees it (input, output, the
nodes between, its convs), found in a captured graph by shape alone, and its weights with the batch
norms after its convs folded in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import batch_norm_affine, conv_weights

#: activations a block may use, as modules a replacement can hold
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU}
#: the functions a squeeze-and-excitation gate ends in
GATES = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}


@dataclass(frozen=True)
class Collapsible:
    """A block a restructuring can collapse into act -> k x k conv (-> + x): its input, its output,
    the nodes between, its convs in order, the rewrite that found it, and how its convs compose
    without their activations (the collapsed block's initialisation; None: they do not)."""

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
    compose: Callable[[Collapsible], tuple[torch.Tensor, torch.Tensor] | None] | None = None

    def composed(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The dense conv the block's convs compute without their activations (its initialisation)."""
        return self.compose(self) if self.compose is not None else None


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


def gated_input(node: fx.Node) -> fx.Node:
    """Through a squeeze-and-excitation gate, h * g(h), to h: the factor of the output's own shape,
    and where both are (at 1x1 pixels), the one no sigmoid or hard sigmoid gives."""
    view = op_view(node)
    if view.kind == "mul" and len(view.inputs) == 2:
        shaped = [factor for factor in view.inputs if tensor_shape(factor) == view.output_shape]
        ungated = [factor for factor in shaped if op_view(factor).kind not in GATES]
        if shaped:
            return (ungated or shaped)[0]
    return node


@dataclass(frozen=True)
class SqueezeExcitation:
    """A gate g(h) = gate(F2 act(F1 mean_hw(h))): the squeeze's width (F1's outputs), its activation
    and the gate's function."""

    width: int
    activation: nn.Module
    gate: nn.Module


def squeeze_excitation(block: Collapsible) -> SqueezeExcitation | None:
    """The block's squeeze-and-excitation gate where it has one written as mean, 1x1 conv,
    activation, 1x1 conv, sigmoid or hard sigmoid, multiply; else None."""
    for node in block.nodes:
        view, main = op_view(node), gated_input(node)
        gate = next((factor for factor in view.inputs if factor is not main), None)
        if view.kind != "mul" or gate is None or tuple((tensor_shape(gate) or ())[2:]) != (1, 1):
            continue  # not a gate of one factor per channel
        if op_view(gate).kind not in GATES or not is_conv(expand := op_view(gate).inputs[0], "dense", (1, 1)):
            return None
        squeezed = op_view(expand).inputs[0]
        activation = activation_module(squeezed)
        reduce = op_view(squeezed).inputs[0] if activation is not None else None
        if reduce is None or not is_conv(reduce, "dense", (1, 1)):
            return None
        return SqueezeExcitation(op_view(reduce).output_shape[1], activation, GATES[op_view(gate).kind]())
    return None


def conv_act_pointwise(project: fx.Node, grouping: str, gate: Callable[[fx.Node], fx.Node] = lambda node: node
                       ) -> tuple[fx.Node, fx.Node, int, int] | None:
    """Where `project` is a stride-1 1x1 dense conv reading an activation (reached through `gate`, such
    as a squeeze-and-excitation multiply) of a `grouping` conv (through its batch norm) with a square
    odd kernel k, equal strides s and 'same' padding: (the activation, that conv, k, s); else None."""
    if not is_conv(project, "dense", (1, 1)) or op_view(project).attrs["stride"] != (1, 1):
        return None
    activation = gate(op_view(project).inputs[0])
    conv = before_norm(op_view(activation).inputs[0]) if activation_module(activation) is not None else None
    found = same_padded(conv, grouping) if conv is not None else None
    return None if found is None else (activation, conv, *found)


def same_padded(conv: fx.Node, grouping: str) -> tuple[int, int] | None:
    """(k, s) where `conv` is a `grouping` conv with a square odd kernel k, equal strides s and 'same'
    padding k // 2; else None."""
    if not is_conv(conv, grouping):
        return None
    attrs = op_view(conv).attrs
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    if kh != kw or kh % 2 == 0 or sh != sw or attrs["padding"] != (kh // 2, kw // 2):
        return None
    return kh, sh


def collapsible(rewrite: str, x: fx.Node, convs: tuple[fx.Node, ...], activation: nn.Module, kernel: int,
                stride: int, compose: Callable[[Collapsible], tuple[torch.Tensor, torch.Tensor] | None] | None = None
                ) -> Collapsible | None:
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
                       residual, compose)


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
