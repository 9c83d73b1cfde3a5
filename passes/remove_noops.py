"""remove-noops (exact): inference no-ops disappear.

dropout(x, p) = x and stochastic_depth(x) = x in eval mode; identity(x) = x (nn.Identity,
contiguous, clone, detach). The node's users read x directly.
"""

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _forward_input(match: Match, rewriter: Rewriter):
    return match["noop"].inputs[0]


register(PatternPass(
    name="remove-noops",
    summary="drop dropout, stochastic depth and identity ops (inference no-ops)",
    rules=RuleSet((Rule("noop", op(("dropout", "identity"), name="noop"), _forward_input),)),
    produces_ops=frozenset(),
))
