"""remove-noops (exact): inference no-ops disappear.

dropout(x, p) = x and stochastic_depth(x) = x in eval mode; identity(x) = x (nn.Identity,
contiguous, clone, detach). The node's users read x directly. A copy that a `.view()` reads stays:
the copy is what makes the tensor contiguous, and `view` refuses a tensor that is not.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register

#: view ops, which need a contiguous input (reshape, which copies when it must, does not)
_VIEWS = frozenset({"view", torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default})


def _forward_input(match: Match, rewriter: Rewriter):
    noop = match["noop"]
    if noop.kind == "identity" and any(user.target in _VIEWS for user in noop.node.users):
        return Decline("a .view() reads this copy; without it the view would get a non-contiguous tensor")
    return noop.inputs[0]


register(PatternPass(
    name="remove-noops",
    summary="drop dropout, stochastic depth and identity ops (inference no-ops)",
    rules=RuleSet((Rule("noop", op(("dropout", "identity"), name="noop"), _forward_input),)),
    produces_ops=frozenset(),
))
