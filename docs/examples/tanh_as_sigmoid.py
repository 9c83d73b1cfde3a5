"""tanh-as-sigmoid (exact): tanh(x) = 2 sigmoid(2x) - 1, for chips with a sigmoid and no tanh.

Both sides are the same function; in float32 they differ by rounding only (sigmoid(2x) is within an
ulp of its value, and 2s - 1 loses at most the bits below 2^-24 of 1). The contributor's guide
(docs/contributing.md) walks through this file; tests/test_contributing.py runs it.
"""

import torch

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _as_sigmoid(match: Match, rewriter: Rewriter):
    tanh = match["tanh"]
    x = tanh.inputs[0]
    doubled = rewriter.function(tanh.node, torch.mul, x, 2.0)
    scaled = rewriter.function(tanh.node, torch.mul, rewriter.function(tanh.node, torch.sigmoid, doubled), 2.0)
    return rewriter.function(tanh.node, torch.sub, scaled, 1.0)


register(PatternPass(
    name="tanh-as-sigmoid",
    summary="tanh as 2 sigmoid(2x) - 1",
    rules=RuleSet((Rule("tanh", op("tanh", name="tanh"), _as_sigmoid),)),
    produces_ops=frozenset({"sigmoid", "mul", "sub"}),
    # its place among the library's passes, stated here (the contracts say which are needed, by name):
    # channels-last-as-channels-first reads per-pixel ops such as tanh, so it runs first; the products by
    # a number this makes are what mul-constant-as-batch-norm rewrites, so that runs after
    must_follow=("channels-last-as-channels-first",),
    must_precede=("mul-constant-as-batch-norm",),
))
