"""Lowering with exact rewrites: rounds of the pipeline until nothing changes, then verification
against the teacher on fresh inputs."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import torch
from torch import fx

import fxrewrite.passes
from fxrewrite.cost import Size
from fxrewrite.legality import CheckReport, check
from fxrewrite.lowering.growth_limit import GrowthLimit, charges, merged_origins, with_merged
from fxrewrite.lowering.planner import TrialJudge
from fxrewrite.rewrite import (Instruments, Pass, PassContext, PassManager, PassResult, Verification,
                               canonical_order, origin_of, verify)
from fxrewrite.target import Target

MAX_ROUNDS = 4
#: lowerings tried while the growth limit keeps more nodes (keeping a node changes what its neighbours
#: become, so the first estimate of what to keep can fall short)
MAX_LIMIT_ATTEMPTS = 8
#: the fresh input the lowered graph is verified on (outputs and every tensor it shares with the teacher)
VERIFY_SEED = 1


@dataclass
class ExactLowering:
    """The graph after exact rewrites, what each pass did, what stays illegal, and the check against the teacher."""

    gm: fx.GraphModule
    passes: list[PassResult]
    verdicts: CheckReport
    verification: Verification
    before: Size
    after: Size
    seconds: dict[str, float]
    #: teacher nodes the growth limit kept for distillation, with the reason
    kept: dict[str, str] = field(default_factory=dict)
    #: what the report must say when the growth limit could not be met (empty when it was)
    growth_note: str = ""


def default_pipeline() -> list[Pass]:
    """Every exact pass, in the order their contracts give."""
    return canonical_order(p for p in fxrewrite.passes.registered_passes().values() if p.exact)


def run_rounds(manager: PassManager, gm: fx.GraphModule, context: PassContext, rounds: int) -> list[PassResult]:
    results: list[PassResult] = []
    for round_index in range(rounds):
        round_results = manager.run(gm, context, round_index)
        results.extend(round_results)
        if not any(r.rewrites for r in round_results):
            break
    return results


def lower_exact(gm: fx.GraphModule, target: Target, example_inputs: tuple[torch.Tensor, ...], *,
                passes: list[Pass] | None = None, instruments: Instruments | None = None, model: str = "",
                debug: bool = False, student_budget: float | None = None) -> ExactLowering:
    """Rewrite `gm` until its illegal nodes are legal or no exact pass applies, within the target's
    growth limit; the result is `ExactLowering.gm`.

    Each pass only rewrites nodes the target rejects (or, for passes that fire on cost, nodes it can
    make cheaper); the planner keeps a replacement only when its products end legal after a trial
    run of the pipeline on them, and where several rules match one node, the cheapest wins. The
    default pipeline repeats the exact passes in contract order until a round changes nothing, since
    one rewrite can expose another (an add becomes a 1x1 conv that the target may need as a 3x3).
    When the result costs more than `growth_max` times the teacher, or (given `student_budget`, with
    calibration data) some node's exact rewrites cost a material share more than a student may
    (fxrewrite.lowering.growth_limit), a copy of the teacher is lowered again with those nodes kept for
    distillation; otherwise `gm` itself is the result, rewritten in place.
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    teacher = _snapshot(gm)
    before = Size.of(gm, performance=target.performance)
    budget = GrowthLimit.of(gm, target, target.performance.growth_max)
    times["prepare"] = time.perf_counter() - start

    start = time.perf_counter()
    pipeline = passes if passes is not None else default_pipeline()
    rounds = 1 if passes is not None else MAX_ROUNDS

    def legalize(products: fx.GraphModule, context: PassContext) -> None:
        run_rounds(PassManager(pipeline), products, context, rounds)

    memo: dict = {}
    kept: dict[str, str] = {}
    all_exact_growth = None
    for attempt in range(MAX_LIMIT_ATTEMPTS):
        if attempt:
            gm = copy.deepcopy(teacher)
        judge = TrialJudge(target, legalize, debug=debug, memo=memo, kept=kept)
        results = run_rounds(PassManager(pipeline, instruments), gm, PassContext(example_inputs, target, debug, judge),
                             rounds)
        charged, merged = charges(gm, target), merged_origins(gm)
        all_exact_growth = all_exact_growth or budget.growth(charged)
        more = budget.over(charged, kept, all_exact_growth, merged)
        if student_budget is not None:
            more |= budget.dearer_than_students(charged, kept | more, student_budget, merged)
        more = {o: r for o, r in with_merged(more, merged).items() if o not in kept}
        if not more:
            break
        kept |= more
    times["rewrite"] = time.perf_counter() - start
    cycles_growth, macs_growth = budget.growth(charged)  # of the last lowering, the result
    limit = target.performance.growth_max
    growth_note = "" if limit is None or max(cycles_growth, macs_growth) <= limit else (
        f"the growth limit was not met after {MAX_LIMIT_ATTEMPTS} lowerings: the model costs x{cycles_growth:.3g} "
        f"the teacher's estimated cycles and x{macs_growth:.3g} its MACs (limit {limit:g} on {target.name})")

    start = time.perf_counter()
    verdicts = _with_budget_reasons(check(gm, target, model), gm, kept)
    verification = verify(gm, teacher, example_inputs, VERIFY_SEED)
    times["verify"] = time.perf_counter() - start
    # check() has estimated the lowered graph's latency already
    after = replace(Size.of(gm), estimate=verdicts.estimate)
    return ExactLowering(gm, results, verdicts, verification, before, after, times, kept, growth_note)


def legal_lowering(gm: fx.GraphModule, target: Target, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule | None:
    """`gm` lowered exactly with no growth limit (rewritten in place), or None where a node stays
    illegal: the form of a region a teacher-form student takes (fxrewrite.distill.students.teacher_form)."""
    unlimited = replace(target, performance=replace(target.performance, growth_max=None))
    lowered = lower_exact(gm, unlimited, example_inputs)
    return None if lowered.verdicts.illegal else lowered.gm


def _snapshot(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm`'s graph over the same layers and constants (new module containers, as
    fx.GraphModule builds them, so removing a layer from `gm` leaves it here): rewrites build new
    layers rather than editing old ones (fxrewrite.rewrite.building), and copying every weight of a
    large model cost a quarter of its lowering."""
    snapshot = fx.GraphModule(gm, copy.deepcopy(gm.graph))
    snapshot.meta.update(gm.meta)
    return snapshot


def _with_budget_reasons(verdicts: CheckReport, gm: fx.GraphModule, kept: dict[str, str]) -> CheckReport:
    """The verdicts, with the growth limit's reason added to each illegal node it kept."""
    if not kept:
        return verdicts
    origins = {node.name: origin_of(node) for node in gm.graph.nodes}
    rows = tuple(replace(row, reason=f"{row.reason}; {kept[origins[row.name]]}")
                 if row.verdict == "illegal" and origins.get(row.name) in kept else row for row in verdicts.rows)
    return replace(verdicts, rows=rows)
