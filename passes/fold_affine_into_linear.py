"""fold-affine-into-linear (exact): per-feature scales and shifts beside an FC layer, folded into its
weights, where the target's cost says that saves work.

- norm-affine: a layer norm over the last dim ends with y = n * gamma + beta; an FC layer reading
  only y computes W y + b = (W diag(gamma)) n + (W beta + b), so the norm keeps its statistics and
  loses its affine map, and the FC layer takes W diag(gamma) and W beta + b (ConvNeXt's and the
  transformers' norm before their first FC layer).
- layer-scale: a per-feature scale c after an FC layer, c (W x + b) = (diag(c) W) x + c b, also
  through the permutation (0, 3, 1, 2) that turns its last dim into channels (ConvNeXt's layer
  scale after its second FC layer).

The products are computed in float64 and rounded once, so the result agrees to float32 rounding.
On the Ethos-U, which runs layer norm as the flow decomposes it, each fold removes one to two
elementwise passes over the map.
"""

import torch
import torch.nn.functional as F

from fxrewrite.ir import constant_value
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import constant_operand, conv_weights, linear

#: the permutation that turns an FC layer's features (last dim) into channels (dim 1)
FEATURES_TO_CHANNELS = (0, 3, 1, 2)


def _norm_affine(match: Match, rewriter: Rewriter):
    norm, fc = match["norm"], match["fc"]
    weights = conv_weights(fc)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    gamma, beta = (constant_value(norm.args.get(k)) for k in ("weight", "bias"))
    if gamma is None or norm.attrs["normalized_shape"] != (weight.shape[1],):
        return Decline("only a norm over the FC layer's input features, with a constant affine map, folds")
    w = weight.double() * gamma.double()
    b = bias.double() if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    if beta is not None:  # a norm made with bias=False has no shift
        b = b + weight.double() @ beta.double()
    anchor = fc.node
    plain = rewriter.function(anchor, F.layer_norm, norm.inputs[0], norm.attrs["normalized_shape"], None, None,
                              norm.attrs["eps"])
    return rewriter.module(anchor, "folded_linear", linear(w.float(), b.float()), plain)


def _layer_scale(match: Match, rewriter: Rewriter):
    scale, fc = match["scale"], match["fc"]
    found = constant_operand(scale)
    if isinstance(found, Decline):
        return found
    _, c, _ = found
    permuted = "perm" in match.captures
    if permuted and tuple(match["perm"].attrs["dims"]) != FEATURES_TO_CHANNELS:
        return Decline("the scale reads a permutation other than features to channels")
    features = fc.attrs["out_features"]
    wanted = (1, features, 1, 1) if permuted else (1,) * (c.dim() - 1) + (features,)
    if tuple(c.shape) != wanted:
        return Decline(f"the scale's shape {tuple(c.shape)} is not one factor per feature")
    weights = conv_weights(fc)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    s = c.reshape(-1).double()
    w = (weight.double() * s[:, None]).float()
    b = (bias.double() * s).float() if bias is not None else None
    anchor = scale.node
    y = rewriter.module(anchor, "scaled_linear", linear(w, b), fc.inputs[0])
    return rewriter.function(anchor, torch.permute, y, FEATURES_TO_CHANNELS) if permuted else y


def _scale_rules() -> tuple[Rule, ...]:
    """The scale after the FC layer, or after its permutation to channels, as either operand of the mul."""
    fc = op("linear", name="fc", single_user=True)
    permuted = op("permute", fc, name="perm", single_user=True)
    return tuple(Rule(f"{name}{side}", pattern, _layer_scale)
                 for name, scaled in (("layer-scale", fc), ("channel-layer-scale", permuted))
                 for side, pattern in (("", op("mul", scaled, None, name="scale")),
                                       ("-first", op("mul", None, scaled, name="scale"))))


register(PatternPass(
    name="fold-affine-into-linear",
    summary="a layer norm's affine map folded into the FC layer after it, a per-feature scale (layer scale) into "
            "the FC layer before it",
    rules=RuleSet((Rule("norm-affine", op("linear", op("layer_norm", name="norm", single_user=True), name="fc"),
                        _norm_affine), *_scale_rules())),
    produces_ops=frozenset({"linear", "layer_norm", "permute"}),
    trigger="cheaper",
    must_follow=("patch-conv-as-linear", "fold-batch-norm", "expand-constant-as-linear", "embedding-as-one-hot",
                 "decompose-bilinear-upsample", "add-as-concat-linear"),
))
