"""channels-last-as-channels-first (exact): a chain of per-pixel ops run between a permute to
channels-last and one back runs on the channels-first map itself, with no permute.

With P(x) = x.permute(0, 2, 3, 1) and P^-1 its inverse, every op f of the chain acts on the last
(channel) dim of each pixel alone, so P^-1(f(P(x))) = f'(x) with f' the same map over dim 1:
- linear(y) = y W^T + b per pixel is a 1x1 conv with kernel W[:, :, None, None] and bias b;
- an elementwise activation (ReLU, GELU, SiLU, ...) commutes with any permute;
- a product or sum with a constant c of shape (C,) (or a scalar) is one with c viewed as (C, 1, 1).
So P^-1(f_n(... f_1(P(x)))) = f'_n(... f'_1(x)): the same sums in another layout, equal up to
float32 summation order. ConvNeXt's and Swin's MLPs are written this way; a chip without permutes
(Arch-Net's set) or linears over maps then runs them as 1x1 convs. A chain holding anything else
(a layer norm over the channels, which no channels-first op computes) or read half-way is left alone.
"""

import copy

import torch
from torch import fx

from fxrewrite.ir import OpView, op_view, tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant, conv2d, conv_weights
from fxrewrite.rewrite.pattern import reads_an_input

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)
ELEMENTWISE = frozenset({"relu", "relu6", "hardtanh", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh",
                         "leaky_relu", "elu", "mish", "softplus"})


def _chain(back: OpView) -> tuple[fx.Node, list[OpView]] | Decline:
    """The channels-first input of the permute that starts the chain ending at `back`, and the
    chain's ops in order."""
    members: list[OpView] = []
    node = back.inputs[0]
    while True:
        view = op_view(node)
        if view.kind == "permute" and view.attrs["dims"] == TO_CHANNELS_LAST:
            return (view.inputs[0], members[::-1]) if members else Decline("the two permutes cancel; no op between")
        if view.kind not in ELEMENTWISE | {"linear", "mul", "add"}:
            return Decline(f"{node.name} ({view.kind}) between the permutes is not a per-pixel op with a "
                           "channels-first form")
        if len(node.users) != 1:
            return Decline(f"{node.name} is read outside the channels-last chain")
        members.append(view)
        node = _chain_operand(view)
        if node is None:
            return Decline(f"{view.node.name}: no operand comes from the chain")


def _chain_operand(view: OpView) -> fx.Node | None:
    """The operand of `view` computed from the graph's inputs (the other of a binary op is a constant)."""
    if view.kind not in ("mul", "add"):
        return view.inputs[0] if view.inputs else None
    computed = [a for a in view.inputs if isinstance(a, fx.Node) and reads_an_input(a)]
    return computed[0] if len(computed) == 1 else None


def _per_channel(view: OpView, operand: fx.Node, channels: int) -> torch.Tensor | float | Decline:
    """The constant operand of a binary op on a channels-last map, as it broadcasts over NCHW."""
    other = next((a for a in view.inputs if a is not operand), None)
    if other is None:
        scalars = [a for a in view.node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        return float(scalars[0]) if len(scalars) == 1 else Decline(f"{view.node.name}: no constant operand")
    value = computed_constant(other) if isinstance(other, fx.Node) else None
    if value is None or not value.is_floating_point():
        return Decline(f"{view.node.name}: the other operand is not a floating-point constant")
    if value.numel() == 1:
        return value.reshape(())
    if value.shape[-1] != channels or value.numel() != channels:
        return Decline(f"{view.node.name}: the constant varies along more than the channels")
    return value.reshape(channels, 1, 1)


def _rebuild(view: OpView, x: fx.Node, channels: int, rewriter: Rewriter) -> tuple[fx.Node, int] | Decline:
    """`view`'s op over dim 1 of the channels-first map `x` of `channels` channels, and its output channels."""
    node = view.node
    if view.kind == "linear":
        weights = conv_weights(view)
        if isinstance(weights, Decline):
            return weights
        weight, bias = weights
        return rewriter.module(node, "conv1x1", conv2d(weight[:, :, None, None], bias), x), weight.shape[0]
    if view.kind in ("mul", "add"):
        operand = _chain_operand(view)
        constant = _per_channel(view, operand, channels)
        if isinstance(constant, Decline):
            return constant
        alpha = float(view.args.get("alpha", 1)) if view.kind == "add" else 1.0
        if view.kind == "add" and alpha != 1.0 and node.args and node.args[0] is not operand:
            return Decline(f"{node.name}: c + alpha * x scales the map; only x + alpha * c is rebuilt")
        if isinstance(constant, torch.Tensor):
            constant = rewriter.constant(node, "channel_constant", constant * alpha)
        elif view.kind == "add":
            constant *= alpha
        return rewriter.function(node, torch.mul if view.kind == "mul" else torch.add, x, constant), channels
    if not node.args or node.args[0] is not view.inputs[0]:
        return Decline(f"{node.name}: its input is not its first argument")
    if node.op == "call_module":
        module = copy.deepcopy(rewriter.gm.get_submodule(node.target))
        return rewriter.module(node, node.name, module, x), channels
    if node.op == "call_method":
        return rewriter.method(node, node.target, x, *node.args[1:]), channels
    return rewriter.function(node, node.target, x, *node.args[1:], **node.kwargs), channels


def _channels_first(match: Match, rewriter: Rewriter):
    back = match["back"]
    found = _chain(back)
    if isinstance(found, Decline):
        return found
    x, members = found
    shape = tensor_shape(x)
    if shape is None or len(shape) != 4:
        return Decline("the chain's input is not a 4-D map of known shape")
    channels = shape[1]
    for view in members:
        built = _rebuild(view, x, channels, rewriter)
        if isinstance(built, Decline):
            return built
        x, channels = built
    return x


register(PatternPass(
    name="channels-last-as-channels-first",
    summary="per-pixel ops between a permute to channels-last and back, on the channels-first map",
    rules=RuleSet((Rule("channels-last-chain", op("permute", name="back", where={
        "a permute back to channels-first": lambda v: v.attrs["dims"] == TO_CHANNELS_FIRST}), _channels_first),)),
    produces_ops=frozenset({"conv2d", "mul", "add"} | ELEMENTWISE),
    # before the activations are decomposed into products the chain cannot carry
    must_precede=("approx-gelu-as-tanh", "conv1x1-as-3x3", "add-as-concat-linear", "add-constant-as-batch-norm", "mul-constant-as-batch-norm", "gelu-as-erf",
                  "silu-as-sigmoid-mul", "hardswish-as-hardsigmoid-mul", "hardsigmoid-as-relu6", "relu6-as-relus"),
))
