"""mask-add-as-rank4 (exact): a constant added to a rank-5 view, in rank 4.

Swin's shifted windows add their attention mask as view(a, (B, n, h, s, t)) + c, with c of shape
(1, n, 1, s, t) made from buffers alone, and view the sum back to (B n, h, s, t). Where c's last two
dims are both full (s, t) or both 1, merging them into one dim of s t in both operands broadcasts
element (i, j, k, p, q) to the same constant element as before: the view (B, n, h, s t) of a and
c reshaped to (1, n, 1, s t) add the same numbers in the same order, and the reshapes that read the
sum (Swin's view back to (B n, h, s, t)) read them in row-major order as they read the rank-5 sum.
Only the shapes change, so the values are equal; every tensor is of rank 4 (the Ethos-U files' limit).
"""

import torch

from fxrewrite.ir import OpView, op_view
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant


def _read_by_reshapes(add: OpView) -> bool:
    return bool(add.node.users) and all(op_view(u).kind == "reshape" for u in add.node.users)


def _in_rank4(match: Match, rewriter: Rewriter):
    split, add = match["split"], match["add"]
    shape = split.output_shape
    if shape is None or len(shape) != 5:
        return Decline("not a rank-5 view")
    if not all(isinstance(d, int) for d in shape[1:]):
        return Decline("a size past the batch is computed at run time")
    if add.args.get("alpha", 1) != 1:
        return Decline("the constant is scaled (alpha); only a plain add is merged")
    constant_node = next(n for n in add.inputs if n is not split.node)
    mask = computed_constant(constant_node) if isinstance(constant_node, torch.fx.Node) else None
    if mask is None or mask.dim() > 5:
        return Decline("the other operand is computed from the input: only a constant is reshaped at compile time")
    padded = mask.reshape((1,) * (5 - mask.dim()) + tuple(mask.shape))
    s, t = shape[3], shape[4]
    if tuple(padded.shape[3:]) not in ((s, t), (1, 1)):
        return Decline(f"the constant's last two dims {tuple(padded.shape[3:])} broadcast unlike each other "
                       f"against ({s}, {t}): merged, they would not broadcast the same")
    anchor, fn = add.node, rewriter.function
    # -1 keeps the batch free, as the view this replaces did
    grouped = fn(anchor, torch.reshape, split.inputs[0], (-1, shape[1], shape[2], s * t))
    flat = rewriter.constant(anchor, "mask_rank4", padded.reshape(*padded.shape[:3], -1))
    # the sum is of rank 4; the reshapes that read it read its elements in the same row-major order
    return fn(anchor, torch.add, *((grouped, flat) if add.inputs[0] is split.node else (flat, grouped)))


def _rule(name: str, first_is_view: bool) -> Rule:
    view = op("reshape", name="split", single_user=True)
    operands = (view, None) if first_is_view else (None, view)
    return Rule(name, op("add", *operands, name="add", where={"read by reshapes alone": _read_by_reshapes}),
                _in_rank4)


register(PatternPass(
    name="mask-add-as-rank4",
    summary="a constant (Swin's shifted-window mask) added to a rank-5 view, with its last two dims merged",
    rules=RuleSet((_rule("view-plus-constant", True), _rule("constant-plus-view", False))),
    produces_ops=frozenset({"reshape", "add"}),
    must_precede=("add-constant-as-batch-norm", "add-as-concat-linear", "add-as-concat-conv"),
    must_follow=("where-constant-mask-as-mul-add", "layer-norm-as-primitives", "hardsigmoid-as-relu6",
                 "group-norm-as-primitives", "gelu-as-erf", "decompose-max-pool", "approx-gelu-as-tanh"),
))
