"""Lowering with exact rewrites: run the passes that make illegal nodes legal, verify, report."""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import fx

from fxrewrite.calib import CalibrationData
from fxrewrite.cost import graph_macs, parameter_count
from fxrewrite.distill import DistillConfig, distill, post_training_quantize
from fxrewrite.legality import CheckReport, check
from fxrewrite.pipeline import (Instruments, Pass, PassContext, PassManager, PassResult, canonical_order,
                                fresh_inputs, registered_passes, relative_error)
from fxrewrite.quant import QuantScheme
from fxrewrite.target import Target

MAX_ROUNDS = 4
VERIFY_SEEDS = (1, 2, 3)


@dataclass
class Lowered:
    gm: fx.GraphModule
    check: CheckReport
    report: dict[str, Any] = field(default_factory=dict)


def default_pipeline() -> list[Pass]:
    return canonical_order(p for p in registered_passes().values() if p.exact)


def _run_rounds(manager: PassManager, gm: fx.GraphModule, context: PassContext, rounds: int) -> list[PassResult]:
    results: list[PassResult] = []
    for round_index in range(rounds):
        round_results = manager.run(gm, context, round_index)
        results.extend(round_results)
        if not any(r.rewrites for r in round_results):
            break
    return results


def _trial_legalizer(pipeline: list[Pass], rounds: int):
    """Legalizes a rewrite's products with the same pipeline, so a rewrite is kept only when what
    it leads to is legal (a 7x7 depthwise conv whose shift layers the chip cannot run stays whole)."""
    def legalize(products: fx.GraphModule, inputs: tuple[torch.Tensor, ...], context: PassContext) -> None:
        _run_rounds(PassManager(pipeline), products, context, rounds)

    return legalize


def lower(gm: fx.GraphModule, target: Target, example_inputs: tuple[torch.Tensor, ...], *,
          passes: list[Pass] | None = None, instruments: Instruments | None = None, model: str = "",
          debug: bool = False) -> Lowered:
    """Rewrite `gm` (in place) until its illegal nodes are legal or no exact pass applies.

    Each pass only rewrites nodes the target rejects (or, for passes that fire on cost, nodes it can
    make cheaper). A replacement is kept only when its products end legal after a trial run of the
    pipeline on them; where several rules match one node, the cheapest by the target's cost
    estimate wins. The default pipeline repeats the exact passes in contract order until a round
    changes nothing, since one rewrite can expose another (an add becomes a 1x1 conv that the
    target may need as a 3x3).
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    teacher = copy.deepcopy(gm)
    before = {"macs": graph_macs(gm), "params": parameter_count(gm), "nodes": len(gm.graph.nodes)}
    times["prepare"] = time.perf_counter() - start

    start = time.perf_counter()
    pipeline = passes if passes is not None else default_pipeline()
    rounds = 1 if passes is not None else MAX_ROUNDS
    context = PassContext(example_inputs, target, debug, legalize=_trial_legalizer(pipeline, rounds))
    results = _run_rounds(PassManager(pipeline, instruments), gm, context, rounds)
    times["rewrite"] = time.perf_counter() - start

    start = time.perf_counter()
    verdicts = check(gm, target, model)
    with torch.no_grad():
        error = max(relative_error(gm(*xs), teacher(*xs))
                    for xs in (fresh_inputs(example_inputs, seed) for seed in VERIFY_SEEDS))
    times["verify"] = time.perf_counter() - start

    applied: Counter = Counter()
    notes: list[str] = []
    for result in results:
        applied[result.name] += result.rewrites
        if result.stats:
            notes.extend(result.stats.notes)
    declined = {r.name: sorted(set(reason for reasons in r.stats.declined.values() for reason in reasons))
                for r in results if r.stats and r.stats.declined}
    report = {
        "model": model,
        "target": target.name,
        "passes": [{"name": r.name, "rewrites": r.rewrites, "seconds": round(r.seconds, 4)} for r in results],
        "rewrites": dict(applied),
        "declined": declined,
        "notes": notes,
        "still_illegal": [{"name": r.name, "kind": r.kind, "reason": r.reason} for r in verdicts.illegal],
        "needs_distillation": not verdicts.all_legal,
        "regions": list(verdicts.regions),
        "max_relative_error": error,
        "before": before,
        "after": {"macs": graph_macs(gm), "params": parameter_count(gm), "nodes": len(gm.graph.nodes)},
        "seconds": {k: round(v, 4) for k, v in times.items()},
    }
    return Lowered(gm, verdicts, report)


def distill_and_quantize(lowered: Lowered, target: Target, data: CalibrationData, scheme: QuantScheme | None,
                         config: DistillConfig) -> Lowered:
    """Finish an exact lowering with data: distil what stayed illegal (quantization-aware with
    `scheme`), or only calibrate `scheme` when every node is already legal; verify the result."""
    example = (data.train[0][:1],)
    if lowered.check.illegal:
        result = distill(lowered.gm, target, data.train, data.held_out, replace(config, quant=scheme))
        gm = result.gm if scheme is not None else lower(result.gm, target, example).gm
    elif scheme is not None:
        result = post_training_quantize(lowered.gm, scheme, data.train, data.held_out)
        gm = result.gm
    else:
        return lowered
    verdicts = check(gm, target, lowered.report.get("model", ""))
    report = dict(lowered.report)
    report["exact_after"] = report.pop("after")
    report.update({
        "distillation": result.report | {"calibration": data.source, "samples": dict(zip(("train", "held_out"),
                                                                                       data.samples))},
        "still_illegal": [{"name": r.name, "kind": r.kind, "reason": r.reason} for r in verdicts.illegal],
        "needs_distillation": not verdicts.all_legal,
        "after": {"macs": graph_macs(gm), "params": parameter_count(gm), "nodes": len(gm.graph.nodes)},
    })
    report["seconds"] = report["seconds"] | {f"distill_{k}": v for k, v in result.report["seconds"].items()}
    return Lowered(gm, verdicts, report)
