"""`distill`: every region replaced by a trained student, end to end (see the package docstring)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.cost import Size
from fxrewrite.distill.training.augment import Relabel
from fxrewrite.distill.training.losses import FeatureAdapter
from fxrewrite.distill.training.checkpoints import FINETUNE, GROW, Checkpoints
from fxrewrite.distill.training.recording import OutputHooks, Recorded, record, region_order
from fxrewrite.distill.growth import grow_missing
from fxrewrite.distill.training.monitor import Monitor, Point, held_out_score, swapped_score
from fxrewrite.distill.training.outlook import Outlook, longer_budget
from fxrewrite.distill.training.processes import shard, world_size
from fxrewrite.distill.regions.carving import carve
from fxrewrite.distill.regions.sharing import size_only_inputs
from fxrewrite.distill.sizing import Sized, allowance, module_cost, spare
from fxrewrite.distill.options import TrainingOptions
from fxrewrite.distill.training.schedules import SCHEDULES, finetune, parallel, progressive
from fxrewrite.distill.synthesis import synthesize
from fxrewrite.distill.students.base import deployed
from fxrewrite.distill.students.teacher_form import Legalize
from fxrewrite.errors import DistillError
from fxrewrite.ir import annotate_shapes, op_view
from fxrewrite.quant import (QuantScheme, calibrate, dequantize_modules, fold_for_quantization, materialize,
                             quantize_modules, quantizers, scheme_for)
from fxrewrite.quant.post_training import CALIBRATION_BATCHES, measure_per_input
from fxrewrite.metrics import Agreement, agreement
from fxrewrite.target import Target


#: the share of the time budget the blockwise phases may use before fine-tuning starts
BLOCKWISE_SHARE = 0.6
#: fine-tuning's epoch cap where none is given (then stretched to the time budget, monitor.STRETCH times at most)
FINETUNE_EPOCHS = 20
#: times fine-tuning meets a growing loss or a fall to chance by rolling back at half the learning rate
#: (MobileNetV2 on the families benchmark: its loss grew at epoch 5 of 20 and the phase stopped at 5 minutes of 10)
FINETUNE_RETRIES = 2


@dataclass(frozen=True)
class StudentResult:
    """One region's student: its class and size, its estimated cost as a multiple of the teacher
    region's, how many layers started from the teacher, its parameters, and its output against the
    teacher's on the held-out split, inside the stitched network."""

    region: str
    student: str
    size: str
    cost_ratio: float
    #: why it grew one step after the blockwise phase (or could not); empty when it met its accuracy
    growth: str
    seeded_layers: int
    student_params: int
    mse: float
    cosine: float


@dataclass
class Distilled:
    gm: fx.GraphModule
    schedule: str
    quantization: str
    regions: list[StudentResult]
    agreement: Agreement
    before: Size
    after: Size
    seconds: dict[str, float] = field(default_factory=dict)
    #: the held-out score after every monitored epoch, with the seconds since distillation began
    history: list[Point] = field(default_factory=list)
    #: why a phase stopped before its epoch cap, per phase
    stops: dict[str, str] = field(default_factory=dict)
    #: per phase, each rollback to its best epoch at half the learning rate, in a sentence
    rollbacks: dict[str, list[str]] = field(default_factory=dict)
    #: per phase, the samples trained on per second of the phase (scoring and checkpoints included)
    samples_per_second: dict[str, float] = field(default_factory=dict)
    #: what a longer time budget would likely give fine-tuning (fxrewrite.distill.training.outlook)
    outlook: Outlook | None = None


def _fingerprint(gm: fx.GraphModule, target: Target, batches: Sequence[torch.Tensor],
                 config: TrainingOptions) -> str:
    digest = hashlib.sha256()
    digest.update(gm.code.encode())
    digest.update(target.name.encode())
    for tensor in list(gm.state_dict().values()) + list(batches):
        digest.update(repr((tuple(tensor.shape), float(tensor.double().sum()))).encode())
    digest.update(repr(sorted(config.trained_echo().items())).encode())
    return digest.hexdigest()


def _stitch(teacher: fx.GraphModule, order: Sequence[str], students: nn.ModuleDict, cache: Sequence[Recorded],
            quant: QuantScheme | None, device: torch.device, batches: Sequence[torch.Tensor]) -> fx.GraphModule:
    """The teacher with its regions swapped for students, batch norms folded (students' and the
    teacher's own), and with a scheme, every layer fake-quantized and calibrated."""
    stitched = copy.deepcopy(teacher).eval()
    for name in order:
        setattr(stitched, name, fold_for_quantization(deployed(students[name].eval()), cache[0].regions[name][0]))
    fold_for_quantization(stitched, (cache[0].batch,))
    stitched.to(device)  # folded layers are built on the CPU
    if quant is not None:
        quantize_modules(stitched, quant)
        stitched.to(device)
        # on whole batches, as one process sees them: every process then starts from one process's scales
        calibrate(stitched, lambda: [stitched(b.to(device)) for b in batches[:CALIBRATION_BATCHES]])
    for quantizer in quantizers(stitched):  # the rest stays in eval mode: frozen statistics, no dropout
        quantizer.train()
    return stitched


def distill(gm: fx.GraphModule, target: Target, batches: Sequence[torch.Tensor], held_out: Sequence[torch.Tensor],
            config: TrainingOptions | None = None, reference: nn.Module | None = None,
            legalize: Legalize | None = None) -> Distilled:
    """Replace every region of `gm` by a trained student (see the package docstring), quantized in the
    target's formats where `config` asks for bits. Where `gm` holds approximate rewrites,
    `reference` is the model before them: the fine-tuning and the agreement measure against its
    outputs, so the approximations are distilled too. `legalize` lowers a region exactly onto the
    target, for teacher-form students (fxrewrite.distill.students.teacher_form; passed in, as lowering
    builds on distillation); None: no teacher forms."""
    config = config or TrainingOptions()
    scheme = scheme_for(target, config.wbits, config.abits, config.quant) if config.wants_quantization else None
    if config.schedule not in SCHEDULES:
        raise DistillError(f"schedule {config.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    times: dict[str, float] = {}
    start = began = time.perf_counter()
    history: list[Point] = []
    deadline = (lambda share: None if config.time_budget is None else began + share * config.time_budget)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    checkpoints = Checkpoints(config.checkpoint_dir, _fingerprint(gm, target, batches, config), config.resume)
    teacher = carve(copy.deepcopy(gm), target).to(device)
    order = region_order(teacher)
    if not order:
        raise DistillError("no region to distil: every node is legal (use post_training_quantize for formats)")
    cache = record(teacher, [b.to(device) for b in shard(batches)])  # this process's share of each batch
    held = record(teacher, [b.to(device) for b in held_out])  # for monitoring, growth and the report
    if reference is not None:
        reference = reference.to(device).eval()
        with torch.no_grad():
            cache = [dataclasses.replace(entry, final=reference(entry.batch)) for entry in cache]
            held = [dataclasses.replace(entry, final=reference(entry.batch)) for entry in held]
    # students are built from the first whole batch, the same in every process: fits from data (a teacher
    # form's layer norm) must give every process the same student
    first = cache[0].regions if world_size() == 1 else record(teacher, [batches[0].to(device)])[0].regions
    model = module_cost(gm, (batches[0].cpu(),), target)  # at the batch the regions are costed at, in every process
    # where `gm` holds approximate rewrites its regions are approximations already: students start fresh
    legalize = legalize if reference is None else None
    region_costs = {n: module_cost(getattr(teacher, n), first[n][0], target) for n in order}
    sized = {n: synthesize(n, *first[n], region_costs[n], target,
                           allowance(region_costs[n], model, config.student_budget),
                           {op_view(node).kind for node in getattr(teacher, n).graph.nodes},
                           size_only_inputs(getattr(teacher, n)), getattr(teacher, n), legalize) for n in order}
    students = nn.ModuleDict({n: s.student for n, s in sized.items()}).to(device)
    seeded = {n: students[n].initialise_from(getattr(teacher, n)) for n in order}
    kinds = {n: students[n].kind for n in order}
    adapters = nn.ModuleDict({f"{n}_{i}": FeatureAdapter(out) for n in order
                              for i, out in enumerate(first[n][1])}).to(device)
    times["teacher"] = time.perf_counter() - start

    start = time.perf_counter()
    quantized_blockwise = scheme is not None and config.blockwise_quant
    if quantized_blockwise:
        _quantize_students(students, order, cache[0], scheme, device)
    students.train()
    blockwise = Monitor(swapped_score(teacher, order, students, held), began, history,
                        config.patience if config.schedule == "parallel" else None, deadline(BLOCKWISE_SHARE))
    if not (checkpoints.reached(FINETUNE) or checkpoints.reached(GROW)):
        if config.schedule == "parallel":
            parallel(students, adapters, cache, config.epochs, config.lr, checkpoints,
                     config.progress, monitor=blockwise, cosine_lr=config.cosine_lr)
        else:
            progressive(teacher, order, students, adapters, cache, config.epochs, config.lr, checkpoints,
                        config.progress, blockwise, config.cosine_lr)
        # a grown student trains alone for as many epochs as the blockwise phase ran (saved for --resume)
        checkpoints.extra["blockwise_epochs"] = max((p.epoch for p in history), default=config.epochs)
    if quantized_blockwise:
        for name in order:
            dequantize_modules(students[name])
    ran = checkpoints.extra.get("blockwise_epochs", config.epochs)
    network = spare(model, list(region_costs.values()), [s.cost for s in sized.values()], config.student_budget)
    growth = grow_missing(students, sized, teacher, adapters, cache, held, ran, config.lr, checkpoints,
                          config.progress, device, network)
    times["blockwise"] = time.perf_counter() - start

    start = time.perf_counter()
    stitched = _stitch(teacher, order, students, cache, scheme, device, batches)
    tuning = Monitor(lambda: held_out_score(stitched, held), began, history, config.patience, deadline(1.0),
                     ask_loss=True, retries=FINETUNE_RETRIES)
    relabel = Relabel(teacher, order, reference) if config.augment else None
    # by default fine-tuning, where agreement rises most per second (the blockwise phases match features,
    # not the outputs judged), takes what the budget has left
    finetune(stitched, order, cache, config.finetune_epochs or FINETUNE_EPOCHS, config.lr, checkpoints,
             config.progress, tuning, config.cosine_lr, config.temperature, relabel, config.seed,
             stretch=config.finetune_epochs is None)
    stitched.eval()
    times["finetune"] = time.perf_counter() - start

    start = time.perf_counter()
    regions = _student_results(stitched, order, held, kinds, seeded, sized, growth)
    stitched = stitched.cpu()
    flat = materialize(stitched) if scheme is not None else fx.GraphModule(stitched, fx.Tracer().trace(stitched))
    sample = batches[0][:1].cpu()
    flat = annotate_shapes(flat, (sample,))  # one sample: MACs per input
    judged_against = reference.cpu() if reference is not None else gm
    result = Distilled(flat, config.schedule, scheme.describe() if scheme else "float32", regions,
                       agreement(flat, judged_against, held_out), measure_per_input(gm, sample),
                       Size.of(flat, count_nodes=False), history=history,
                       stops={p: m.stopped for p, m in (("blockwise", blockwise), ("finetune", tuning)) if m.stopped},
                       rollbacks={"finetune": tuning.rollbacks} if tuning.rollbacks else {},
                       samples_per_second={p: round(m.samples_per_second, 1) for p, m in
                                           (("blockwise", blockwise), ("finetune", tuning)) if m.samples_per_second},
                       outlook=longer_budget(history, FINETUNE, tuning.stopped))
    times["report"] = time.perf_counter() - start
    result.seconds = {k: round(v, 3) for k, v in times.items()}
    return result


def _quantize_students(students: nn.ModuleDict, order: Sequence[str], first: Recorded, scheme: QuantScheme,
                       device: torch.device) -> None:
    """Wrap every student's convs and FC layers in fake quantizers, calibrated on the first batch."""
    for name in order:
        student = students[name]
        quantize_modules(student, scheme)
        student.to(device).eval()
        calibrate(student, lambda: student(*first.regions[name][0]))


def _student_results(stitched: nn.Module, order: Sequence[str], held_out: Sequence[Recorded], kinds: dict[str, str],
                     seeded: dict[str, int], sized: dict[str, Sized], growth: dict[str, str]) -> list[StudentResult]:
    """Per region, on the held-out split (the teacher's records): the student's output in the stitched
    network vs the teacher's."""
    errors: dict[str, list[tuple[float, float]]] = {n: [] for n in order}
    with torch.no_grad():
        for entry in held_out:
            hooks = OutputHooks(stitched, order)
            stitched(entry.batch)
            hooks.remove()
            for name in order:
                for got, want in zip(hooks.values[name], entry.regions[name][1]):
                    errors[name].append((F.mse_loss(*torch.broadcast_tensors(got, want)).item(),
                                         F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item()))
    return [StudentResult(name, kinds[name], sized[name].size, round(sized[name].cost_ratio, 3), growth.get(name, ""),
                          seeded[name],
                          sum(p.numel() for p in getattr(stitched, name).parameters()),
                          sum(e[0] for e in errors[name]) / max(len(errors[name]), 1),
                          sum(e[1] for e in errors[name]) / max(len(errors[name]), 1)) for name in order]
