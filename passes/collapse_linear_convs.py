"""collapse-linear-convs (exact, fires on cost): two convs with nothing between them are one conv.

With y1(p) = sum_t W1(t) x(p + t - p1) + b1 (stride 1) and y2(q) = sum_u W2(u) y1(s2 q + u - p2) + b2,
y2(q) = sum_v M(v) x(s2 q + v - p1 - p2) + b, where M[o, i](v) = sum_m sum_(u + t = v) W2[o, m](u)
W1[m, i](t) is a (k1 + k2 - 1)-wide kernel and b = b2 + sum_(m, u) W2[o, m](u) b1[m]. This holds
at every output pixel when the second conv reads no padding (p2 = 0), or when the first is a
bias-free 1x1 conv (its output is 0 where the second conv pads, as the merged conv's input is).
Grouped convs are taken as block-diagonal dense ones, and two depthwise convs stay depthwise.
This is the collapse of Restructurable Activation Networks (1x1 -> depthwise k x k -> 1x1 without
activations becomes one dense k x k conv). It fires only where the target's cost estimate says
the merged conv is cheaper, and its product must be legal (or legalizable) on the target.
"""

import math

import torch

from fxrewrite.cost import nodes_cycles, op_cycles
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import block_diagonal, conv2d, plain_conv_weights


def _compose(second: torch.Tensor, first: torch.Tensor, pairing: str) -> torch.Tensor:
    """M[o, i](u + t) = sum_m second[o, m](u) first[m, i](t); `pairing` is the einsum over channels."""
    kh2, kw2 = second.shape[2:]
    kh1, kw1 = first.shape[2:]
    out_ch = second.shape[0]
    merged = torch.zeros(out_ch, first.shape[1], kh1 + kh2 - 1, kw1 + kw2 - 1, dtype=torch.float64)
    for uy in range(kh2):
        for ux in range(kw2):
            merged[:, :, uy:uy + kh1, ux:ux + kw1] += torch.einsum(pairing, second[:, :, uy, ux], first)
    return merged


def _merged_cycles(first, second, depthwise: bool, perf) -> float:
    """The merged conv's estimated cycles, from shapes alone (before any weight is composed)."""
    kernel = math.prod(a + b - 1 for a, b in zip(first.attrs["kernel"], second.attrs["kernel"]))
    in_ch, out_ch = first.attrs["in_ch"], second.attrs["out_ch"]
    outputs = math.prod(second.output_shape)
    macs = outputs * kernel * (1 if depthwise else in_ch)
    rate = perf.depthwise_macs_per_cycle if depthwise else perf.dense_macs_per_cycle
    weights = out_ch * kernel * (1 if depthwise else in_ch)
    return op_cycles(perf, macs / rate, math.prod(first.input_shapes[0]) + outputs, weights)


def _collapse(match: Match, rewriter: Rewriter):
    first, second = match["first"], match["second"]
    both_depthwise = first.attrs["grouping"] == second.attrs["grouping"] == "depthwise" and \
        first.attrs["out_ch"] == first.attrs["in_ch"] == second.attrs["out_ch"]
    perf = getattr(rewriter.target, "performance", None)
    if perf is not None and first.input_shapes and second.output_shape is not None:
        before = nodes_cycles([first.node, second.node], perf)
        after = _merged_cycles(first, second, both_depthwise, perf)
        if after >= before:
            return Decline(f"not cheaper: the merged conv would take {after:.3g} estimated cycles against {before:.3g}")
    weights_1, weights_2 = plain_conv_weights(first), plain_conv_weights(second)
    for weights in (weights_1, weights_2):
        if isinstance(weights, Decline):
            return weights
    (w1, b1), (w2, b2) = weights_1, weights_2
    if first.attrs["stride"] != (1, 1):
        return Decline("the first conv has a stride; only stride-1 first convs compose into one kernel")
    bias_free_pointwise = first.attrs["kernel"] == (1, 1) and first.attrs["padding"] == (0, 0) and (
        b1 is None or not b1.any())
    if second.attrs["padding"] != (0, 0) and not bias_free_pointwise:
        return Decline("the second conv pads its input, which the merged conv cannot reproduce at the border "
                       "(exact only when the second conv has no padding or the first is a bias-free 1x1)")
    # the merged conv is placed and judged as a shell before any weight is composed: composing two
    # wide kernels is the dearest arithmetic of a lowering, and the planner's trials meet many pairs
    # (the products of a decomposition) whose merged conv the target could not run
    groups = first.attrs["in_ch"] if both_depthwise else 1
    kernel = tuple(a + b - 1 for a, b in zip(first.attrs["kernel"], second.attrs["kernel"]))
    has_bias = b1 is not None or b2 is not None
    padding = tuple(a + b for a, b in zip(first.attrs["padding"], second.attrs["padding"]))
    shell = conv2d(torch.empty(second.attrs["out_ch"], first.attrs["in_ch"] // groups, *kernel),
                   torch.empty(second.attrs["out_ch"]) if has_bias else None,
                   stride=second.attrs["stride"], padding=padding, groups=groups)
    merged_node = rewriter.module(second.node, "collapsed_conv", shell, first.inputs[0])
    target = rewriter.target
    if target is not None and not (verdict := target.verdict(merged_node)).legal:
        return Decline(f"the merged conv would not run on {target.name} ({verdict.reason}): a decomposition "
                       "would only undo the collapse")
    w1, w2 = w1.double(), w2.double()
    if both_depthwise:
        merged = _compose(w2, w1, "oi,oikl->oikl")
        channel_sums = w2.sum(dim=(1, 2, 3))
    else:
        w1, w2 = block_diagonal(w1.double(), first.attrs["groups"]), block_diagonal(w2.double(), second.attrs["groups"])
        merged = _compose(w2, w1, "om,mikl->oikl")
        channel_sums = w2.sum(dim=(2, 3))
    bias = torch.zeros(second.attrs["out_ch"], dtype=torch.float64) if has_bias else None
    if b2 is not None:
        bias += b2.double()
    if b1 is not None:
        bias += channel_sums * b1.double() if both_depthwise else channel_sums @ b1.double()
    with torch.no_grad():  # in place: the view memoized on the shell's node holds these very Parameters
        shell.weight.copy_(merged)
        if bias is not None:
            shell.bias.copy_(bias)
    return merged_node


register(PatternPass(
    name="collapse-linear-convs",
    summary="conv followed directly by conv (no activation) as one conv, where the target's cost says it is cheaper",
    rules=RuleSet((Rule("conv-conv", op("conv2d", op("conv2d", name="first", single_user=True), name="second"),
                        _collapse),)),
    produces_ops=frozenset({"conv2d"}),
    trigger="cheaper",
    must_precede=("patch-conv-as-linear", "approx-large-kernel", "conv1x1-as-3x3", "decompose-large-kernel", "decompose-grouped-conv",
                  "split-input-channels"),
))
