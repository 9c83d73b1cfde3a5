"""The planner's judgement of a rewrite: trial legalization.

A replacement is judged by what it ends as on the target: its products are copied into a small
graph and legalized in a trial by the rest of the pipeline, so a rewrite that needs further
rewrites (an add that becomes a 1x1 conv the chip runs only as a 3x3) is kept when where it leads is
legal, and a rewrite whose products stay illegal (a 7x7 depthwise conv as shift layers the chip
cannot run) is declined. Among the rules that could replace one node, the cheapest by the target's
cost estimate wins (fxrewrite.rewrite.judge).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx

from fxrewrite.rewrite import Decline, Match, PassContext, ReplacementJudge
from fxrewrite.rewrite.judge import JudgedPass
from fxrewrite.target import Target

#: how deep trials of trials may go before products are judged as they are
MAX_TRIAL_DEPTH = 3

#: runs the pipeline on a small graph built from a replacement's products
Legalize = Callable[[fx.GraphModule, PassContext], None]


def extract_subgraph(gm: fx.GraphModule, nodes: list[fx.Node]) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    """A graph module computing `nodes` (in order; the last is the output) from placeholders for
    whatever they read, with random example inputs of the recorded shapes."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inputs: list[torch.Tensor] = []

    def outside(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op == "get_attr":
                env[node] = graph.get_attr(node.target)
            else:
                env[node] = graph.placeholder(node.name)
                meta = node.meta["tensor_meta"]
                inputs.append(torch.randn(meta.shape, dtype=meta.dtype) if meta.dtype.is_floating_point
                              else torch.zeros(meta.shape, dtype=meta.dtype))
            env[node].meta = dict(node.meta)
        return env[node]

    for node in nodes:
        env[node] = graph.node_copy(node, outside)
    graph.output(env[nodes[-1]])
    return fx.GraphModule(gm, graph), tuple(inputs)


class TrialJudge(ReplacementJudge):
    """Legalizes a replacement's products in a trial before judging them (see the module docstring)."""

    def __init__(self, target: Target, legalize: Legalize, depth: int = 0, debug: bool = False):
        super().__init__(target)
        self.legalize, self.depth, self.debug = legalize, depth, debug

    def __call__(self, pass_: JudgedPass, root: fx.Node, match: Match, created: list[fx.Node]) -> float | Decline:
        if not created:
            return 0.0
        if all(self.target.verdict(n).legal for n in created) or self.depth >= MAX_TRIAL_DEPTH:
            return self.judge_products(pass_, root, match, created)
        products, inputs = extract_subgraph(root.graph.owning_module, created)
        deeper = TrialJudge(self.target, self.legalize, self.depth + 1, self.debug)
        self.legalize(products, PassContext(inputs, self.target, self.debug, deeper))
        return self.judge_products(pass_, root, match, [n for n in products.graph.nodes
                                                         if n.op not in ("placeholder", "output", "get_attr")])
