"""NN-Mass: how much of a network's signal skips ahead, a topology measure of its expressivity.

NN-Mass (Bhardwaj, Li and Marculescu, CVPR 2021) sums over a network's cells density x width x
depth, where density is the share of possible long-range links (skip connections) present.
RAN-i (Arm's Restructurable Activation Networks) scales ConvNeXt by it, counting 2 x width per
block. fxrewrite computes it on any captured graph the same way for every family:

    NN-Mass = sum over skip joins of  w x d

A skip join is an add (or a concatenation) that reads a tensor x, the *skip*, beside a tensor
computed from x, the *body*, through at least one channel-mixing layer. w is the skip's width
(channels of x: dim 1 of an image tensor, the last dim of a token tensor) and, as an identity skip
carries every channel, the density is 1. d is the number of channel-mixing layers the skip
bypasses: dense or grouped convs and linear layers between x and the join, side branches such as
a squeeze-and-excitation gate included; a depthwise conv filters each channel alone, links no
neurons across the width, and does not count. Where several inputs of a concatenation came
before its last one (DenseNet), each of them is a skip of that last input.

Closed forms (width w of the block's input and output):
    ResNet basic block (3x3, 3x3, + x)                     2w
    ResNet bottleneck (1x1, 3x3, 1x1, + x)                 3w
    inverted residual (1x1 expand, 3x3 depthwise, 1x1 project, + x)   2w
    ConvNeXt block (7x7 depthwise, two linear layers, + x)    2w, RAN-i's count
    any block with a conv on its shortcut                  0 (no identity link)
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import fx

from fxrewrite.ir import op_view, tensor_shape

#: kinds whose layers mix channels (convs unless depthwise)
MIXING_KINDS = frozenset({"conv1d", "conv2d", "linear", "multihead_attention"})
JOIN_KINDS = frozenset({"add", "cat"})


def _mixes_channels(node: fx.Node) -> bool:
    view = op_view(node)
    return view.kind in MIXING_KINDS and view.attrs.get("grouping") != "depthwise"


def _width(node: fx.Node) -> int:
    shape = tensor_shape(node) or ()
    if len(shape) == 4:
        return shape[1]
    return shape[-1] if shape else 0


def _ancestors(node: fx.Node, since: int, order: dict[fx.Node, int]) -> set[fx.Node]:
    """`node` and every node it is computed from, back to position `since`."""
    seen, stack = {node}, [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen and order[parent] >= since:
                seen.add(parent)
                stack.append(parent)
    return seen


def _bypassed_layers(skip: fx.Node, body: fx.Node, order: dict[fx.Node, int]) -> int | None:
    """Channel-mixing layers on the paths from `skip` to `body`; None where `body` does not read `skip`."""
    before_body = _ancestors(body, order[skip], order)
    if skip not in before_body or skip is body:
        return None
    after_skip, stack = {skip}, [skip]
    while stack:
        for user in stack.pop().users:
            if user in before_body and user not in after_skip:
                after_skip.add(user)
                stack.append(user)
    return sum(_mixes_channels(n) for n in after_skip if n is not skip)


def _join_mass(join: fx.Node, order: dict[fx.Node, int]) -> float:
    inputs = [n for n in op_view(join).inputs if isinstance(n, fx.Node) and tensor_shape(n)]
    if len(inputs) < 2:
        return 0.0
    last = max(inputs, key=order.__getitem__)
    mass = 0.0
    for skip in inputs:
        if skip is not last and (layers := _bypassed_layers(skip, last, order)):
            mass += _width(skip) * layers
    return mass


def nn_mass(nodes: Iterable[fx.Node], graph: fx.Graph) -> float:
    """NN-Mass of the skip joins among `nodes` (see the module docstring)."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    return sum(_join_mass(node, order) for node in nodes if op_view(node).kind in JOIN_KINDS)


def graph_nn_mass(gm: fx.GraphModule) -> float:
    return nn_mass(gm.graph.nodes, gm.graph)
