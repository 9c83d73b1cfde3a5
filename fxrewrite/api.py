"""The Python interface, mirroring the CLI: `load_and_capture`, `check`, `draw` and `lower`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from fxrewrite import legality, viz
from fxrewrite.errors import UsageError
from fxrewrite.frontend import Frontend, capture, load_model
from fxrewrite.legality import CheckReport
from fxrewrite.lowering import TrainingOptions, lower_graph
from fxrewrite.report import LoweringReport
from fxrewrite.rewrite import Instruments, Pass, parse_pipeline
from fxrewrite.target import Target


@dataclass
class Lowered:
    """The lowered graph, its report, the final verdict per node, and the example inputs it was lowered at."""

    gm: fx.GraphModule
    report: LoweringReport
    verdicts: CheckReport
    example_inputs: tuple[torch.Tensor, ...]

    @property
    def legal(self) -> bool:
        return self.verdicts.all_legal


def load_and_capture(
    spec: str,
    *,
    weights: str | None = None,
    trust_pickle: bool = False,
    input_shapes: Sequence[str] | None = None,
    frontend: Frontend = "auto",
    seed: int = 0,
) -> fx.GraphModule:
    """Load MODEL `spec` and capture it; the example inputs are kept in `gm.meta["example_inputs"]`."""
    loaded = load_model(spec, weights=weights, trust_pickle=trust_pickle, input_shapes=input_shapes, seed=seed)
    gm = capture(loaded.module, loaded.example_inputs, frontend)
    gm.meta["example_inputs"] = loaded.example_inputs
    return gm


def _as_graph(model: nn.Module | str, example_inputs: Sequence[torch.Tensor] | None,
              frontend: Frontend = "auto", input_shapes: Sequence[str] | None = None) -> fx.GraphModule:
    if isinstance(model, str):
        return load_and_capture(model, frontend=frontend, input_shapes=input_shapes)
    if isinstance(model, fx.GraphModule) and "fxrewrite_frontend" in model.meta:
        return model
    if example_inputs is None:
        raise TypeError("example_inputs are needed to capture a module that is not yet a captured GraphModule")
    gm = capture(model.eval(), tuple(example_inputs), frontend)
    gm.meta["example_inputs"] = tuple(example_inputs)
    return gm


def _as_target(target: Target | str | None) -> Target | None:
    return Target.load(target) if isinstance(target, str) else target


def check(
    model: nn.Module | str,
    target: Target | str,
    example_inputs: Sequence[torch.Tensor] | None = None,
    *,
    name: str = "",
) -> CheckReport:
    """Verdict for every node of `model` (captured first unless it already is) on `target`."""
    gm = _as_graph(model, example_inputs)
    return legality.check(gm, _as_target(target), name or (model if isinstance(model, str) else type(model).__name__))


def draw(
    model: nn.Module | str,
    path: str | Path,
    target: Target | str | None = None,
    title: str = "",
    example_inputs: Sequence[torch.Tensor] | None = None,
) -> tuple[Path, str]:
    """Draw `model` to `path`; returns the file written and a note (non-empty when `dot` is missing)."""
    return viz.render(_as_graph(model, example_inputs), path, _as_target(target), title)


def lower(
    model: nn.Module | str,
    example_inputs: Sequence[torch.Tensor] | None = None,
    *,
    target: Target | str = "npu-generic",
    calib: str | torch.Tensor | None = None,
    wbits: int | None = None,
    abits: int | None = None,
    passes: str | list[Pass] | None = None,
    instruments: Instruments | None = None,
    tolerance: float = 1e-5,
    max_growth: float | None = None,
    frontend: Frontend = "auto",
    input_shapes: Sequence[str] | None = None,
    name: str = "",
    debug: bool = False,
    **training: Any,
) -> Lowered:
    """Lower `model` onto `target`, as `fxrewrite lower` does.

    `model` is a MODEL spec (`torchvision.models:resnet18`, a `.pt2` file, ...; `input_shapes` as
    with --input-shape), an `nn.Module` with `example_inputs`, or a captured GraphModule
    (rewritten in place). Exact rewrites run first; with
    `calib` (a --calib source or a tensor of inputs) what stays illegal is distilled into students,
    quantized in the target's formats when `wbits`/`abits` are given. Further keywords are the
    fields of `fxrewrite.lowering.TrainingOptions` (epochs, schedule, device, ...). `max_growth`
    overrides the target's `performance.growth_max` (how many times the teacher's estimated cycles
    and MACs the exactly lowered model may cost; see fxrewrite.lowering.budget).
    """
    chip = _as_target(target)
    if max_growth is not None:
        if max_growth <= 0:
            raise UsageError(f"max_growth must be positive, got {max_growth:g}")
        chip = replace(chip, performance=replace(chip.performance, growth_max=max_growth))
    gm = _as_graph(model, example_inputs, frontend, input_shapes)
    inputs = tuple(gm.meta["example_inputs"] if example_inputs is None else example_inputs)
    pipeline = parse_pipeline(passes) if isinstance(passes, str) else passes
    options = TrainingOptions(calib=calib, wbits=wbits, abits=abits, **training)
    label = name or (model if isinstance(model, str) else type(model).__name__)
    outcome = lower_graph(gm, chip, inputs, model=label, passes=pipeline, instruments=instruments,
                          tolerance=tolerance, training=options, debug=debug)
    return Lowered(outcome.gm, LoweringReport.from_outcome(outcome), outcome.verdicts, inputs)
