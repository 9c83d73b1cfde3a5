"""remove-noops (exact): inference no-ops disappear.

dropout(x, p) = x and stochastic_depth(x) = x in eval mode; identity(x) = x (nn.Identity,
contiguous, clone, detach); a pad of zero on every side is x (Swin pads its maps to a multiple of
the window, by nothing where they already are one). The node's users read x directly. Where a `.view()` reads a copy,
directly or through ops that return views of it (select, transpose, getitem, ...: they keep its
layout), the copy is what made the tensor contiguous, and `view` refuses a tensor that is not: those
views become reshapes, which equal the view on a contiguous tensor and copy where they must, so the
values are the same and no copy op is left for a chip to run (layout is its compiler's choice).
"""

import torch
from torch import fx

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register

#: view ops, which need a contiguous input (reshape, which copies when it must, does not)
_VIEWS = frozenset({"view", torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default})


#: methods and functions that return a view of their input, as symbolic tracing names them (ATen ops say so
#: in their schema)
_ALIASING = frozenset({"select", "narrow", "transpose", "permute", "t", "unsqueeze", "squeeze", "expand",
                       "unflatten", "split", "chunk", "unbind", "getitem", "diagonal", "movedim", "swapaxes"})


def _returns_view(node: fx.Node) -> bool:
    if isinstance(node.target, torch._ops.OpOverload):
        returns = node.target._schema.returns
        return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.op in ("call_function", "call_method") and name in _ALIASING


def _views_reading(node: fx.Node) -> list[fx.Node]:
    """The `view`s that read `node`, directly or through ops that return views of it."""
    frontier, seen, views = list(node.users), set(), []
    while frontier:
        user = frontier.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.target in _VIEWS:
            views.append(user)
        elif _returns_view(user):
            frontier.extend(user.users)
    return views


def _as_reshape(view: fx.Node) -> None:
    if view.op == "call_method":
        view.target = "reshape"
    elif view.target is torch.ops.aten._unsafe_view.default or view.target is torch.ops.aten.view.default:
        view.target = torch.ops.aten.reshape.default


def _forward_input(match: Match, rewriter: Rewriter):
    noop = match["noop"]
    if noop.kind == "identity":
        for view in _views_reading(noop.node):
            _as_reshape(view)
    return noop.inputs[0]


register(PatternPass(
    name="remove-noops",
    summary="drop dropout, stochastic depth, identity ops and pads of nothing (inference no-ops)",
    rules=RuleSet((Rule("noop", op(("dropout", "identity"), name="noop"), _forward_input),
                   Rule("zero-pad", op("pad", name="noop", where={"a pad of nothing": lambda v: not any(v.attrs["pad"])}),
                        _forward_input))),
    produces_ops=frozenset(),
))
