"""The Python interface, mirroring the CLI: `load_and_capture`, `check`, `draw` and `lower`."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from fxrewrite import legality, viz
from fxrewrite.errors import UsageError, check_positive
from fxrewrite.frontend import Frontend, capture, load_model
from fxrewrite.frontend.inputs import check_inputs
from fxrewrite.frontend.load import spec_files
from fxrewrite.legality import CheckReport
from fxrewrite.distill import CALIBRATED_FIELDS, TrainingOptions
from fxrewrite.lowering import lower_graph
from fxrewrite.report import LoweringReport
from fxrewrite.rewrite import Instruments, Pass, parse_pipeline
from fxrewrite.ship.compilers import installed_compiler
from fxrewrite.ship.host_latency import HostLatency
from fxrewrite.target import Target
from fxrewrite.writers import WRITERS, Program, Written, writer_for


@dataclass
class Lowered:
    """The lowered graph, its report, the final verdict per node, the example inputs it was lowered
    at, and the target it was lowered for."""

    gm: fx.GraphModule
    report: LoweringReport
    verdicts: CheckReport
    example_inputs: tuple[torch.Tensor, ...]
    target: Target

    @property
    def legal(self) -> bool:
        return self.verdicts.all_legal

    def save(self, path: str | os.PathLike, calibration: torch.Tensor | None = None) -> Written:
        """Write the lowered program in the format `path`'s suffix names (`fxrewrite.writers.WRITERS`:
        .pt2, .onnx, .pte), as `fxrewrite lower -o` does; `calibration` inputs (N, ...) calibrate a
        format that quantizes itself (.pte), else its example input does. Returns the file written and
        what was checked (`.onnx`: onnxruntime's results; `.pte`: Vela's numbers)."""
        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"path must be a file path ending {', '.join(WRITERS)}, not a {type(path).__name__}")
        if calibration is not None and not isinstance(calibration, torch.Tensor):
            raise UsageError(f"calibration must be a tensor of inputs (N, ...), not a {type(calibration).__name__}")
        writer = writer_for(path, "path")
        writer.prepare(self.target, f"save({os.fspath(path)!r})")
        singles = tuple((one,) for one in calibration.split(1)) if calibration is not None else ()
        return writer.write(Program(self.gm, self.example_inputs, self.target, self.legal, singles), Path(path))


def load_and_capture(
    spec: str,
    *,
    weights: str | None = None,
    trust_pickle: bool = False,
    input_shapes: Sequence[str | Sequence[int]] | None = None,
    frontend: Frontend = "auto",
    seed: int = 0,
) -> fx.GraphModule:
    """Load MODEL `spec` and capture it; the example inputs are kept in `gm.meta["example_inputs"]`."""
    if not isinstance(spec, (str, os.PathLike)):
        raise UsageError(f"spec must name a MODEL (a str or path, such as 'torchvision.models:resnet18'), not a "
                         f"{type(spec).__name__}")
    spec = os.fspath(spec)
    loaded = load_model(spec, weights=weights, trust_pickle=trust_pickle, input_shapes=_shape_texts(input_shapes),
                        seed=seed)
    gm = capture(loaded.module, loaded.example_inputs, frontend)
    gm.meta["example_inputs"] = loaded.example_inputs
    return gm


def _example_tuple(example_inputs: object) -> tuple[torch.Tensor, ...]:
    """One tensor, or a sequence of tensors (one per model input), as a tuple; anything else refused."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise UsageError(f"example_inputs must be a tensor or a tuple of tensors (one per model input), not a "
                         f"{type(example_inputs).__name__}")
    return tuple(inputs)


def _shape_texts(input_shapes: object) -> list[str] | None:
    """`input_shapes` as --input-shape texts: one per input, each a text (`"1,3,224,224"`,
    `"1,128:int64"`) or a sequence of whole numbers (a float32 input of that shape)."""
    if input_shapes is None:
        return None
    if isinstance(input_shapes, str):
        raise UsageError(f"input_shapes is a list with one shape per input, such as [{input_shapes!r}], not a string")
    if not isinstance(input_shapes, Sequence):
        raise UsageError(f"input_shapes must be a list with one shape per input, such as [(1, 3, 224, 224)], not a "
                         f"{type(input_shapes).__name__}")
    texts = []
    for shape in input_shapes:
        if isinstance(shape, Sequence) and not isinstance(shape, str) and shape \
                and all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            texts.append(",".join(map(str, shape)))
        elif isinstance(shape, str):
            texts.append(shape)
        else:
            raise UsageError(f"input_shapes: {shape!r} is not a shape; give each as a tuple of whole numbers such as "
                             "(1, 3, 224, 224) or as a text such as '1,128:int64'")
    return texts


def _as_graph(model: nn.Module | str | os.PathLike, example_inputs: Sequence[torch.Tensor] | None,
              frontend: Frontend = "auto", input_shapes: Sequence[str | Sequence[int]] | None = None) -> fx.GraphModule:
    """`model` captured; a module is captured from a copy in eval mode, so the caller's keeps its mode."""
    shapes = _shape_texts(input_shapes)
    if isinstance(model, (str, os.PathLike)):
        return load_and_capture(os.fspath(model), frontend=frontend, input_shapes=shapes)
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be an nn.Module, a captured GraphModule or a MODEL spec (str or path), not a "
                         f"{type(model).__name__}")
    if isinstance(model, fx.GraphModule) and "fxrewrite_frontend" in model.meta:
        return model
    if example_inputs is None:
        raise UsageError("example_inputs are needed to capture a module that is not yet a captured GraphModule")
    inputs = _example_tuple(example_inputs)
    module = copy.deepcopy(model).eval()
    check_inputs(module, inputs)
    gm = capture(module, inputs, frontend)
    gm.meta["example_inputs"] = inputs
    return gm


def _label(model: object) -> str:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__


def _as_target(target: Target | str | os.PathLike | None, required: bool = True) -> Target | None:
    if target is None and required:
        raise UsageError("target is needed: a Target, a built-in target's name (such as 'npu-generic') or a .toml "
                         "path")
    if target is None or isinstance(target, Target):
        return target
    if isinstance(target, (str, os.PathLike)):
        return Target.load(os.fspath(target))
    raise UsageError(f"target must be a Target, a built-in target's name or a .toml path, not a "
                     f"{type(target).__name__}")


def _pipeline(passes: object) -> list[Pass] | None:
    """`passes` (None: every exact pass to a fixpoint; a --passes text; a list of Pass objects) as a list."""
    if passes is None:
        return None
    if isinstance(passes, str):
        return parse_pipeline(passes)
    if isinstance(passes, (list, tuple)) and all(callable(getattr(p, "run", None)) for p in passes):
        return list(passes)
    raise UsageError(f"passes must be None, a comma-separated text of pass names or a list of Pass objects, not "
                     f"{passes!r:.60}")


def files_read(model: str, weights: str | None = None, calib: str | None = None,
               target: Target | None = None) -> list[Path]:
    """Every file a command reads: MODEL's file or its callable's source in any spelling, --weights,
    --calib's file, folder or callable source, and the target's files (those it extends included);
    no output may replace one."""
    files = spec_files(model) + ([Path(weights)] if weights else []) + (spec_files(calib) if calib else [])
    return files + [Path(f) for f in (target.files if target is not None else ())]


def check(
    model: nn.Module | str,
    target: Target | str,
    example_inputs: Sequence[torch.Tensor] | None = None,
    *,
    name: str = "",
) -> CheckReport:
    """Verdict for every node of `model` (captured first unless it already is) on `target`."""
    gm = _as_graph(model, example_inputs)
    return legality.check(gm, _as_target(target), name or _label(model))


def draw(
    model: nn.Module | str,
    path: str | Path,
    target: Target | str | None = None,
    title: str = "",
    example_inputs: Sequence[torch.Tensor] | None = None,
) -> tuple[Path, str]:
    """Draw `model` to `path`; returns the file written and a note (non-empty when `dot` is missing)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"path must be the picture's file (a str or path ending .svg, .png, .pdf or .dot), not a "
                         f"{type(path).__name__}")
    return viz.render(_as_graph(model, example_inputs), path, _as_target(target, required=False), title)


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
    input_shapes: Sequence[str | Sequence[int]] | None = None,
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
    fields of `fxrewrite.distill.options.TrainingOptions` (epochs, schedule, device, ...). `max_growth`
    overrides the target's `performance.growth_max` (how many times the teacher's estimated cycles
    and MACs the exactly lowered model may cost; see fxrewrite.lowering.growth_limit).
    """
    chip = _as_target(target)
    if max_growth is not None:
        check_positive("--max-growth", max_growth)
        chip = replace(chip, performance=replace(chip.performance, growth_max=max_growth))
    gm = _as_graph(model, example_inputs, frontend, input_shapes)
    inputs = tuple(gm.meta["example_inputs"] if example_inputs is None else _example_tuple(example_inputs))
    pipeline = _pipeline(passes)
    if instruments is not None and not isinstance(instruments, Instruments):
        raise UsageError(f"instruments must be an fxrewrite.rewrite.Instruments, not a {type(instruments).__name__}")
    unknown = sorted(set(training) - {f.name for f in fields(TrainingOptions)})
    if unknown:
        raise UsageError(f"lower() got unknown keywords {', '.join(unknown)}; the training keywords are the fields of "
                         "fxrewrite.distill.options.TrainingOptions")
    idle = [name for name in CALIBRATED_FIELDS if name in training]
    if calib is None and idle:
        raise UsageError(f"lower() got {', '.join(idle)} without calib: they steer distillation, quantization or "
                         "restructuring, which run only on calibration data; pass calib or leave them out")
    compiler = installed_compiler(chip)
    if calib is not None and compiler is not None and "block_cycles" not in training:
        training["block_cycles"] = compiler.block_cycles(chip.accelerator)  # the compiler's cycles, not the estimate
    elif calib is not None and chip.performance.measured_by == "host-latency" and "block_cycles" not in training:
        training["block_cycles"] = HostLatency(chip.performance.clock_mhz)
    options = TrainingOptions(calib=calib, wbits=wbits, abits=abits, **training)
    label = name or _label(model)
    outcome = lower_graph(gm, chip, inputs, model=label, passes=pipeline, instruments=instruments,
                          tolerance=tolerance, training=options, debug=debug)
    return Lowered(outcome.gm, LoweringReport.from_outcome(outcome), outcome.verdicts, inputs, chip)
