"""The planner's judgement of a rewrite: trial legalization.

A replacement is judged by what it ends as on the target: its products are copied into a small
graph and legalized in a trial by the rest of the pipeline, so a rewrite that needs further
rewrites (an add that becomes a 1x1 conv the chip runs only as a 3x3) is kept when where it leads is
legal, and a rewrite whose products stay illegal (a 7x7 depthwise conv as shift layers the chip
cannot run) is declined. Among the rules that could replace one node, the cheapest by the target's
cost estimate wins (fxrewrite.rewrite.judge).

Trials are memoized by the products' signature (each node's op, attributes, scalar arguments and
shapes, how they connect, and which of their weights are all zeros) for one target: legality and
cost do not depend on weight values beyond that (a zero bias lets collapse-linear-convs merge across
padding), and
a decomposition repeats the same few products many times (the shifts of a large kernel, the adds
that sum its windows), so without the memo trials of trials grow exponentially with depth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import fx

from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.rewrite import Decline, Match, PassContext, ReplacementJudge
from fxrewrite.rewrite.judge import JudgedPass, Outcome
from fxrewrite.target import Target

#: how deep trials of trials may go before products are judged as they are
MAX_TRIAL_DEPTH = 3

#: runs the pipeline on a small graph built from a replacement's products
Legalize = Callable[[fx.GraphModule, PassContext], None]


def extract_subgraph(gm: fx.GraphModule, nodes: list[fx.Node]) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    """A graph module computing `nodes` (in order; the last is the output) from placeholders for
    whatever they read, with zero example inputs of the recorded shapes."""
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
                # a trial reads shapes, never values (random ones cost 60 ms of maxvit_t's lowering)
                inputs.append(torch.zeros(meta.shape, dtype=meta.dtype))
            env[node].meta = dict(node.meta)
        return env[node]

    for node in nodes:
        env[node] = graph.node_copy(node, outside)
    graph.output(env[nodes[-1]])
    return fx.GraphModule(gm, graph), tuple(inputs)


def _zero_tensors(node: fx.Node) -> tuple[bool | None, ...]:
    """Which tensors `node` holds (a module's own parameters) or is (a constant) are all zeros: the one
    property of values a rule reads (collapse-linear-convs takes a 1x1 conv with a zero bias as
    bias-free); None for a tensor without values (on the meta device)."""
    owner = node.graph.owning_module
    if node.op == "call_module":
        tensors = list(owner.get_submodule(node.target).parameters(recurse=False))
    elif node.op == "get_attr":
        value = owner
        for part in node.target.split("."):
            value = getattr(value, part)
        tensors = [value] if isinstance(value, torch.Tensor) else []
    else:
        return ()
    return tuple(None if t.is_meta else not t.any().item() for t in tensors)


def products_signature(nodes: list[fx.Node]) -> tuple:
    """What a trial's result depends on: ops, attributes, scalar arguments, shapes and wiring, and
    which weights are all zeros, not the weights' values."""
    index = {node: i for i, node in enumerate(nodes)}

    def wire(arg: fx.Node) -> tuple:
        if arg in index:
            return ("made", index[arg])
        return ("read", arg.op == "get_attr", tensor_shape(arg), _zero_tensors(arg))

    parts = []
    for node in nodes:
        view = op_view(node)
        scalars = repr(fx.node.map_arg((node.args, node.kwargs), lambda _: None))
        parts.append((view.kind, repr(sorted(view.attrs.items())), scalars if node.op != "call_module" else "",
                      tuple(wire(a) for a in node.all_input_nodes), view.output_shape, _zero_tensors(node)))
    return tuple(parts)


class TrialJudge(ReplacementJudge):
    """Legalizes a replacement's products in a trial before judging them (see the module docstring)."""

    def __init__(self, target: Target, legalize: Legalize, depth: int = 0, debug: bool = False,
                 memo: dict[tuple, Outcome] | None = None, kept: Mapping[str, str] | None = None):
        super().__init__(target, kept)
        self.legalize, self.depth, self.debug = legalize, depth, debug
        self.memo = {} if memo is None else memo

    def judge_created(self, pass_: JudgedPass, root: fx.Node, match: Match, created: list[fx.Node]) -> float | Decline:
        if all(self.target.verdict(n).legal for n in created) or self.depth >= MAX_TRIAL_DEPTH:
            return self.judge_products(pass_, root, match, created)
        key = (self.depth, products_signature(created))
        if key not in self.memo:
            products, inputs = extract_subgraph(root.graph.owning_module, created)
            deeper = TrialJudge(self.target, self.legalize, self.depth + 1, self.debug, self.memo)
            self.legalize(products, PassContext(inputs, self.target, self.debug, deeper))
            self.memo[key] = self.outcome(n for n in products.graph.nodes
                                          if n.op not in ("placeholder", "output", "get_attr"))
        return self.compare(pass_, root, match, self.memo[key])
