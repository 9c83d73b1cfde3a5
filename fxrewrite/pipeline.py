"""Passes, the pass registry and the PassManager with its instruments.

A pass declares what it rewrites (`root_ops`), what it may create (`produces_ops`), whether it is
exact, and which passes must run after it (`must_precede`); a pipeline that breaks an ordering
contract is refused with a sentence when it is built. Instruments: timing and rewrite counts,
before/after IR dumps, verification against the teacher after each pass, and a reproducer written
when a pass raises.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import networkx as nx
import torch
from torch import fx, nn

from fxrewrite.capture import annotate_shapes
from fxrewrite.errors import FxrewriteError, UsageError
from fxrewrite.io import atomic_write_text
from fxrewrite.ops import op_view
from fxrewrite.pattern import Decline, Match, RewriteStats, RuleSet, apply_rules
from fxrewrite.target import Target


#: runs the exact pipeline on a small graph built from a rewrite's products (set by `lower`)
Legalize = Callable[[fx.GraphModule, tuple[torch.Tensor, ...], "PassContext"], None]

#: how deep trials of trials may go before products are judged as they are
MAX_TRIAL_DEPTH = 3


@dataclass
class PassContext:
    example_inputs: tuple[torch.Tensor, ...]
    target: Target | None = None
    debug: bool = False
    legalize: Legalize | None = None
    trial_depth: int = 0

    def is_illegal(self, node: fx.Node) -> bool:
        """Without a target every node is a candidate; with one, only nodes the target rejects."""
        return self.target is None or not self.target.check(op_view(node)).legal

    def evaluate(self, pass_: PatternPass, root: fx.Node, match: Match, created: list[fx.Node]) -> float | Decline:
        """Judge a replacement by what it ends as on the target: its products, legalized in a trial by
        the rest of the pipeline, must all be legal, and a pass that fires on cost must save some.
        Returns the change in estimated cost (products minus the nodes they replace)."""
        assert self.target is not None
        target = self.target
        if not created:
            return 0.0
        products, inputs = extract_subgraph(root.graph.owning_module, created)
        illegal = [n for n in products.graph.nodes if not target.check(op_view(n)).legal]
        if illegal and self.legalize is not None and self.trial_depth < MAX_TRIAL_DEPTH:
            self.legalize(products, inputs, PassContext(inputs, target, self.debug, self.legalize, self.trial_depth + 1))
            illegal = [n for n in products.graph.nodes if not target.check(op_view(n)).legal]
        if illegal:
            return Decline(f"what it produces stays illegal on {target.name} "
                           f"({target.check(op_view(illegal[0])).reason}); left for distillation")
        replaced = [n for n in match.nodes if n is root or set(n.users) <= set(match.nodes)]
        before, after = target.cost.nodes(replaced), target.cost.nodes(products.graph.nodes)
        if pass_.trigger == "cheaper" and after >= before:
            return Decline(f"not cheaper on {target.name}: estimated cost {after:.3g} against {before:.3g} now")
        growth_max = target.cost.growth_max
        if growth_max is not None and after > growth_max * before:
            return Decline(f"its legal form costs {after / max(before, 1e-12):.3g}x the nodes it replaces, over "
                           f"cost.growth_max = {growth_max:g} of {target.name}; left for distillation")
        return after - before


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


@dataclass
class PassResult:
    name: str
    rewrites: int
    seconds: float
    stats: RewriteStats | None = None
    notes: list[str] = field(default_factory=list)


class Pass(Protocol):
    name: str
    summary: str
    exact: bool
    root_ops: frozenset[str]
    produces_ops: frozenset[str]
    must_precede: tuple[str, ...]

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult: ...


@dataclass(frozen=True)
class PatternPass:
    """A pass made of pattern rules; it only rewrites roots the target rejects."""

    name: str
    summary: str
    rules: RuleSet
    produces_ops: frozenset[str]
    exact: bool = True
    must_precede: tuple[str, ...] = ()
    #: "illegal": rewrite nodes the target rejects; "cheaper": rewrite any node when the target's cost drops
    trigger: str = "illegal"

    @property
    def root_ops(self) -> frozenset[str]:
        return frozenset().union(*(r.root_kinds or frozenset() for r in self.rules.rules))

    def run(self, gm: fx.GraphModule, ctx: PassContext) -> PassResult:
        start = time.perf_counter()
        evaluate = None if ctx.target is None else functools.partial(ctx.evaluate, self)
        root_filter = ctx.is_illegal if self.trigger == "illegal" else None
        stats = apply_rules(gm, self.rules, debug=ctx.debug, root_filter=root_filter, evaluate=evaluate,
                            target=ctx.target)
        return PassResult(self.name, stats.total, time.perf_counter() - start, stats)


_REGISTRY: dict[str, Pass] = {}


def register(pass_: Pass) -> Pass:
    if pass_.name in _REGISTRY:
        raise RuntimeError(f"pass {pass_.name!r} is registered twice")
    _REGISTRY[pass_.name] = pass_
    return pass_


def registered_passes() -> dict[str, Pass]:
    import fxrewrite.passes  # noqa: F401  (registration happens on import)

    return dict(_REGISTRY)


def canonical_order(passes: Iterable[Pass]) -> list[Pass]:
    """Order passes so that every `must_precede` contract holds (ties: by name)."""
    passes = list(passes)
    names = {p.name: p for p in passes}
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from((p.name, q) for p in passes for q in p.must_precede if q in names)
    return [names[n] for n in nx.lexicographical_topological_sort(graph)]


def parse_pipeline(spec: str) -> list[Pass]:
    """`fold-batch-norm,conv1x1-as-3x3` -> passes, refusing unknown names and wrong orders."""
    known = registered_passes()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UsageError("empty --passes: name at least one pass (see `fxrewrite passes`)")
    for name in names:
        if name not in known:
            raise UsageError(f"unknown pass {name!r} in --passes; passes are {', '.join(sorted(known))}")
    position = {n: i for i, n in enumerate(names)}
    for name in names:
        for later in known[name].must_precede:
            if later in position and position[later] < position[name]:
                raise UsageError(f"pass {name} must run before {later} ({name} produces "
                                 f"{', '.join(sorted(known[name].produces_ops))} that {later} rewrites)")
    return [known[n] for n in names]


class VerificationError(FxrewriteError):
    exit_code = 3


def relative_error(got: object, want: object) -> float:
    """max |got - want| / max |want| over every output tensor."""
    got_leaves = [t for t in torch.utils._pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
    want_leaves = [t for t in torch.utils._pytree.tree_leaves(want) if isinstance(t, torch.Tensor)]
    if len(got_leaves) != len(want_leaves):
        return float("inf")
    worst = 0.0
    for g, w in zip(got_leaves, want_leaves):
        if g.shape != w.shape:
            return float("inf")
        scale = w.abs().max().item() or 1.0
        worst = max(worst, (g.double() - w.double()).abs().max().item() / scale)
    return worst


def fresh_inputs(like: Sequence[torch.Tensor], seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=generator, dtype=t.dtype) if t.is_floating_point() else t
                 for t in like)


@dataclass
class Instruments:
    dump_ir: Path | None = None
    verify_each: nn.Module | None = None  # the teacher
    tolerance: float = 1e-5
    reproducer_dir: Path | None = None
    on_result: Callable[[PassResult], None] | None = None


class PassManager:
    def __init__(self, passes: Sequence[Pass], instruments: Instruments | None = None):
        self.passes = list(passes)
        self.instruments = instruments or Instruments()

    def run(self, gm: fx.GraphModule, ctx: PassContext, round_index: int = 0) -> list[PassResult]:
        results = []
        for index, pass_ in enumerate(self.passes):
            before = gm.code
            try:
                result = pass_.run(gm, ctx)
            except Exception as exc:
                path = self._write_reproducer(before, pass_, exc)
                raise FxrewriteError(f"pass {pass_.name} failed: {type(exc).__name__}: {exc}; "
                                     f"reproducer written to {path}") from exc
            if result.rewrites:
                annotate_shapes(gm, ctx.example_inputs)
                self._dump(round_index, index, pass_.name, before, gm.code)
                self._verify(gm, ctx, pass_.name)
            results.append(result)
            if self.instruments.on_result:
                self.instruments.on_result(result)
        return results

    def _dump(self, round_index: int, index: int, name: str, before: str, after: str) -> None:
        if self.instruments.dump_ir is None:
            return
        stem = self.instruments.dump_ir / f"{round_index:02d}-{index:02d}-{name}"
        atomic_write_text(stem.with_name(stem.name + ".before.py"), before)
        atomic_write_text(stem.with_name(stem.name + ".after.py"), after)

    def _verify(self, gm: fx.GraphModule, ctx: PassContext, name: str) -> None:
        teacher = self.instruments.verify_each
        if teacher is None:
            return
        inputs = fresh_inputs(ctx.example_inputs, seed=1234)
        with torch.no_grad():
            error = relative_error(gm(*inputs), teacher(*inputs))
        if error > self.instruments.tolerance:
            raise VerificationError(f"--verify-each: after pass {name} the graph differs from the teacher by a "
                                    f"relative error of {error:.3g} (tolerance {self.instruments.tolerance:g})")

    def _write_reproducer(self, code: str, pass_: Pass, exc: Exception) -> Path:
        directory = self.instruments.reproducer_dir or Path("fxrewrite-reproducer")
        spec = ",".join(p.name for p in self.passes)
        text = (f"# fxrewrite reproducer: pass {pass_.name} raised {type(exc).__name__}: {exc}\n"
                f"# pipeline: --passes {spec}\n# graph before the pass:\n{code}")
        return atomic_write_text(directory / f"{pass_.name}-reproducer.py", text)
