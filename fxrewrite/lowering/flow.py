"""The whole lowering of a captured graph: exact rewrites, then, with calibration data, students for
what stays illegal or post-training quantization, and the final verdicts. The decisions of when to
train, which formats to use and whether the options can work are made here, before any work."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace

import torch
from torch import fx

from fxrewrite.distill import Distilled, Region, TrainingOptions, distill, find_regions
from fxrewrite.distill.training.processes import world_size
from fxrewrite.errors import UsageError, check_positive
from fxrewrite.frontend.batch import FIXED_BATCH
from fxrewrite.frontend.inputs import check_seed
from fxrewrite.legality import CheckReport, check
from fxrewrite.lowering.exact import ExactLowering, legal_lowering, lower_exact
from fxrewrite.lowering.heap import older_objects_frozen
from fxrewrite.lowering.restructure import Restructured, restructure
from fxrewrite.quant import (SOURCES_HELP, CalibrationData, QuantScheme, load_calibration,
                             post_training_quantize, scheme_for)
from fxrewrite.quant.post_training import Calibrated
from fxrewrite.rewrite import Instruments, Pass, verify_on
from fxrewrite.target import Target


@dataclass
class LoweringOutcome:
    """Everything the lowering did, for the report: the exact phase, the regions it left, what
    training or calibration did, and the final graph with its verdicts."""

    model: str
    target: Target
    exact: ExactLowering
    regions: list[Region]
    gm: fx.GraphModule
    verdicts: CheckReport
    trained: Distilled | Calibrated | None = None
    calibration: CalibrationData | None = None
    #: the restructuring planner's choices (fxrewrite.lowering.restructure), with calibration data
    restructured: Restructured | None = None
    notes: list[str] = field(default_factory=list)
    #: where training ran: the device and the number of processes (torchrun) that shared it
    device: str = "cpu"
    processes: int = 1
    #: the options training or calibration ran with
    options: TrainingOptions | None = None


def validate(options: TrainingOptions, target: Target, gm: fx.GraphModule,
             example_inputs: tuple[torch.Tensor, ...]) -> QuantScheme | None:
    """Refuse options that cannot work, before any work; the quantization scheme they ask for."""
    check_seed(options.seed)
    for flag in ("wbits", "abits"):
        value = getattr(options, flag)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"--{flag} {value!r}: give a whole number of bits, such as 4")
    if options.calib is not None and not isinstance(options.calib, (str, torch.Tensor)):
        raise UsageError(f"calib must name a source ({SOURCES_HELP}) or be a tensor of inputs, not a "
                         f"{type(options.calib).__name__}")
    if options.wants_quantization and options.calib is None:
        raise UsageError(f"--wbits/--abits need calibration data: pass --calib with {SOURCES_HELP}")
    if options.calib is None:
        return None
    if FIXED_BATCH in gm.meta:
        raise UsageError(f"the model runs at batch {example_inputs[0].shape[0]} only ({gm.meta[FIXED_BATCH]}), so it "
                         "cannot learn from batches of calibration inputs; export it with a dynamic batch: "
                         "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")
    if len(example_inputs) != 1:
        raise UsageError(f"--calib feeds single-input models; this one takes {len(example_inputs)} inputs")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", options.device):
        raise UsageError(f"--device {options.device}: use cpu, cuda or cuda:N")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {options.device}: torch sees no CUDA device here; use --device cpu")
    for flag, least in (("calib_size", 2), ("batch_size", 1), ("epochs", 1), ("finetune_epochs", 1), ("patience", 1)):
        value = getattr(options, flag)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise UsageError(f"--{flag.replace('_', '-')} {value}: give a whole number of at least {least}"
                             + (" (one sample is held out)" if flag == "calib_size" else ""))
    for flag in ("lr", "time_budget", "student_budget"):
        if getattr(options, flag) is not None:
            check_positive(f"--{flag.replace('_', '-')}", getattr(options, flag))
    if options.deploy_shape is not None:
        _check_deploy_shape(options.deploy_shape, gm, example_inputs)
    budget = options.accuracy_budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget <= 100:
        raise UsageError(f"--accuracy-budget {budget}: give points of top-1 agreement from 0 (no restructuring) "
                         "to 100")
    if not options.wants_quantization:
        return None
    return scheme_for(target, options.wbits, options.abits, options.quant)


def _check_deploy_shape(shape: object, gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> None:
    """Refuse a deployment shape that is no shape of the model's input, or that the model cannot take
    (a layer fixed to the size it was captured at: the network is not resolution-free)."""
    captured = tuple(example_inputs[0].shape)
    written = ",".join(map(str, shape)) if isinstance(shape, (tuple, list)) else str(shape)
    shape = tuple(shape) if isinstance(shape, list) else shape
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
            and len(shape) == len(captured) and shape[1:2] == captured[1:2]):
        raise UsageError(f"--deploy-shape {written}: give the model's input shape at deployment, such as "
                         f"{','.join(map(str, (1, *captured[1:2], *(224,) * (len(captured) - 2))))} (the captured "
                         f"input is {','.join(map(str, captured))}: the same rank and channels)")
    try:
        with torch.no_grad():
            copy.deepcopy(gm).eval()(torch.zeros(shape, dtype=example_inputs[0].dtype))
    except Exception as exc:  # noqa: BLE001 - any failure means the model does not run at that shape
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"--deploy-shape {written}: the model does not run at that shape (it is not resolution-free: "
                         f"{first}); cost it at the shape it was captured at, "
                         f"{','.join(map(str, captured))}, by leaving --deploy-shape out") from None


#: the calibration inputs an exact lowering is verified on where a random input is past its range
VERIFY_SAMPLES = 8


@older_objects_frozen()
def lower_graph(gm: fx.GraphModule, target: Target, example_inputs: tuple[torch.Tensor, ...], *,
                model: str = "", passes: list[Pass] | None = None, instruments: Instruments | None = None,
                tolerance: float = 1e-5, training: TrainingOptions | None = None,
                debug: bool = False) -> LoweringOutcome:
    """Lower `gm` (rewritten in place by the exact phase) onto `target`; see the module docstring.
    Training is skipped when the exact phase broke the maths (error above `tolerance`), unless the
    pipeline holds approximate passes: then the students and the approximations are trained against
    the model as it was before them."""
    training = training or TrainingOptions()
    check_positive("--tolerance", tolerance)
    scheme = validate(training, target, gm, example_inputs)
    approximate = {p.name for p in passes or () if not p.exact}
    reference = copy.deepcopy(gm) if approximate and training.calib is not None else None
    student_budget = training.student_budget if training.calib is not None else None
    teacher = copy.deepcopy(gm) if training.calib is not None and len(example_inputs) == 1 else None
    exact = lower_exact(gm, target, example_inputs, passes=passes, instruments=instruments, model=model, debug=debug,
                        student_budget=student_budget)
    data = None if training.calib is None else load_calibration(
        training.calib, example_inputs[0], training.calib_size, training.batch_size, training.seed)
    if teacher is not None and exact.verification.max_relative_error > tolerance:
        # a random input can drive a trained network far past its range, where it amplifies float
        # rounding (efficientnet_b0 trained on MNIST: logits near 1,600, error 1.5e-3); its own inputs judge it
        found = verify_on(exact.gm, teacher, (data.train[0][:VERIFY_SAMPLES],), "calibration inputs (a random input: "
                          f"{exact.verification.max_relative_error:.2g})")
        exact = replace(exact, verification=found)
    regions = find_regions(exact.gm, target) if exact.verdicts.illegal else []
    outcome = LoweringOutcome(model, target, exact, regions, exact.gm, exact.verdicts,
                              notes=[exact.growth_note] if exact.growth_note else [])
    broken = exact.verification.max_relative_error > tolerance and reference is None
    if data is not None and not exact.verdicts.illegal and not broken and training.accuracy_budget > 0:
        restructured = restructure(exact.gm, target, data, training.accuracy_budget, training.seed,
                                   training.block_cycles, training.deploy_shape)
        verdicts = exact.verdicts if restructured.gm is exact.gm else check(restructured.gm, target, model)
        outcome = replace(outcome, gm=restructured.gm, verdicts=verdicts, restructured=restructured, calibration=data)
    needs_training = bool(exact.verdicts.illegal) or scheme is not None
    if data is None or not needs_training or broken:
        return outcome
    if exact.verdicts.illegal:
        trained: Distilled | Calibrated = distill(exact.gm, target, data.train, data.held_out, training, reference,
                                                  legalize=legal_lowering)
        # a float student may hold rewritable ops of its own (1x1 merges): lower them exactly too
        final = trained.gm if scheme is not None else lower_exact(trained.gm, target, (data.train[0][:1],)).gm
    else:
        trained = post_training_quantize(outcome.gm, scheme, data.train, data.held_out)
        final = trained.gm
    return replace(outcome, gm=final, verdicts=check(final, target, model), trained=trained, calibration=data,
                   device=training.device, processes=world_size(), options=training)
