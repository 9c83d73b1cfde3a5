"""Student blocks: legal ops only, the region's input and output shapes, started from the teacher.

Policy for image-map outputs (fxrewrite.distill.token_students has the others; the size within the
budget is chosen by fxrewrite.distill.sizing):
- NCHW -> NCHW (same or halved map): `depth` layers of 3x3 conv + batch norm + ReLU of `width`
  channels and a last 3x3 conv; one stride-2 conv per halving of the map. The widest width is
  max(input, output channels), capped by the target's in_channels_max; depth runs from the
  halvings plus one (at most MAX_DEPTH) down to the halvings (at least 1). Where an input has the
  output's shape and already points its way (a skip path), the last conv reads that input beside
  the body and starts as input + body (a residual block whose add the target cannot run);
  otherwise a batch norm follows it.
- Merges: inputs finer than the others (an FPN or U-Net level) first pass their own stride-2
  3x3 conv + batch norm + ReLU layers, one per halving, down to the coarsest map that feeds the
  body; inputs coarser than the body by an integer factor are enlarged by the target's own ops
  (fxrewrite.distill.upsampling: nearest resize, or a phase conv and pixel shuffle) and join the
  concat; where the target has no such op they are left out (the body learns from the rest), and
  a region of only such inputs is refused with its shapes and that reason.
- Gates: vector inputs (N, C, 1, 1) or (N, C) beside a map (squeeze-and-excitation) multiply the
  body's output through a 1x1 conv started as the identity (the teacher's gate as it is) where
  the target multiplies a map by a per-channel vector; elsewhere they are left out, and the body
  learns the gate from the map it squeezes.
- A region with several outputs gets one student per output, all reading every input, each
  with an equal share of the budget.

- Channel limits: where the maps the body concatenates exceed the channels the target's convs
  read, each first passes a 3x3 conv + batch norm + ReLU narrowing it in proportion, so every
  student is legal by construction.

A region that reads no input computes the same tensors for every sample: its student is them, recorded
once. Where the region has an exact legal form, that is the student instead (fxrewrite.distill.teacher_form);
generic students start from the teacher's layers where shapes allow (fxrewrite.distill.seeding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import fx, nn

from fxrewrite.cost import Cost
from fxrewrite.distill.sizing import (DEFAULT_STUDENT_BUDGET, GROWTH_CAP, MIN_WIDTH, Sized, first_within_budget,
                                     module_cost, widths)
from fxrewrite.distill.teacher_form import Legalize, teacher_forms
from fxrewrite.distill.token_students import Candidates, runs_on, skip_input, token_candidates
from fxrewrite.distill.upsampling import factor_between, legal_form, upsampler
from fxrewrite.errors import DistillError
from fxrewrite.target import Target

MAX_DEPTH = 3


def _conv_bn(in_ch: int, out_ch: int, stride: int, relu: bool, padding: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding), nn.BatchNorm2d(out_ch)]
    return layers + [nn.ReLU()] if relu else layers


class ConvStudent(nn.Module):
    """Conv layers over the maps it reads (`maps`: input position -> the paddings of the stride-2
    layers taking it to the body's size; `halvings`: those of the body's; `ups`: input position ->
    the upsampling form and factor taking a coarser map to the body's size), the output optionally
    gated by vector inputs (`gates`: input position -> whether it is (N, C) rather than (N, C, 1, 1))."""

    def __init__(self, channels: dict[int, int], maps: dict[int, tuple[int, ...]], out_ch: int, width: int,
                 depth: int, halvings: tuple[int, ...], skip_input: int | None, gates: dict[int, bool] | None = None,
                 ups: dict[int, tuple[str, int]] | None = None, narrow: dict[int, int] | None = None):
        super().__init__()
        gates, ups, narrow = gates or {}, ups or {}, narrow or {}
        self.maps, self.gates, self.skip_input, self.ups = list(maps), list(gates), skip_input, list(ups)
        self.flat_gates = [i for i, flat in gates.items() if flat]
        self.down = nn.ModuleList(nn.Sequential(*[layer for padding in maps[i] for layer in
                                                  _conv_bn(channels[i], channels[i], 2, True, padding)],
                                                *(_conv_bn(channels[i], narrow[i], 1, True) if i in narrow else []))
                                  for i in self.maps)
        self.up = nn.ModuleList(upsampler(form, channels[i], factor) for i, (form, factor) in ups.items())
        layers = []
        in_ch = sum(narrow.get(i, channels[i]) for i in self.maps) + sum(channels[i] for i in self.ups)
        for index in range(depth):
            layers += _conv_bn(in_ch, width, 2, True, halvings[index]) if index < len(halvings) else \
                _conv_bn(in_ch, width, 1, relu=True)
            in_ch = width
        self.body = nn.Sequential(*layers)
        self.gate = nn.Conv2d(sum(channels[i] for i in self.gates), out_ch, 1) if self.gates else None
        if self.gate is not None and self.gate.in_channels == out_ch:
            with torch.no_grad():
                self.gate.weight.copy_(torch.eye(out_ch)[:, :, None, None])
                self.gate.bias.zero_()
        if skip_input is None:
            self.last = nn.Sequential(*_conv_bn(width, out_ch, 1, relu=False))
            return
        # the last conv reads [skip input | body] and starts as skip + (a fresh conv of the body)
        self.last = nn.Conv2d(out_ch + width, out_ch, 3, padding=1)
        with torch.no_grad():
            self.last.weight[:, :out_ch].zero_()
            self.last.weight[:, :out_ch, 1, 1] = torch.eye(out_ch)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        maps = [down(inputs[i]) for i, down in zip(self.maps, self.down)]
        maps += [up(inputs[i]) for i, up in zip(self.ups, self.up)]
        body = self.body(torch.cat(maps, 1) if len(maps) > 1 else maps[0])
        out = self.last(body) if self.skip_input is None else self.last(torch.cat([inputs[self.skip_input], body], 1))
        if self.gate is None:
            return out
        vectors = [inputs[i][:, :, None, None] if i in self.flat_gates else inputs[i] for i in self.gates]
        return out * self.gate(torch.cat(vectors, 1) if len(vectors) > 1 else vectors[0])


class MultiOutputStudent(nn.Module):
    """One student per output of a region with several, each reading every input."""

    def __init__(self, students: Sequence[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(students)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(head(*inputs) for head in self.heads)


class TensorInputs(nn.Module):
    """A student of the region's tensor inputs alone: sizes read at run time (the batch size a
    reshape needs) reach a region as inputs too, and the student does not need them."""

    def __init__(self, student: nn.Module, positions: Sequence[int]):
        super().__init__()
        self.student, self.positions = student, tuple(positions)

    def forward(self, *inputs: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.student(*(inputs[i] for i in self.positions))


class ConstantOutputs(nn.Module):
    """A region that reads no input (a relative position bias gathered from its table) computes the
    same tensors for every sample: its student is those tensors, recorded once, exactly."""

    def __init__(self, outputs: Sequence[torch.Tensor]):
        super().__init__()
        for index, value in enumerate(outputs):
            self.register_buffer(f"output_{index}", value.detach().clone())
        self.count = len(outputs)

    def forward(self, *_: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = tuple(getattr(self, f"output_{index}") for index in range(self.count))
        return values[0] if self.count == 1 else values


def _halvings(size: Sequence[int], to: Sequence[int]) -> tuple[int, ...] | None:
    """The paddings of stride-2 3x3 conv layers taking a map of `size` to `to`, fewest layers first,
    padding 1 (n -> ceil(n / 2)) before 0 (n -> floor((n - 1) / 2), an unpadded pool's size); None
    when none do."""
    paths: list[tuple[tuple[int, ...], tuple[int, ...]]] = [((), tuple(size))]
    for _ in range(6):
        for paddings, sizes in paths:
            if sizes == tuple(to):
                return paddings
        paths = [(paddings + (p,), tuple((n + 2 * p - 3) // 2 + 1 for n in sizes))
                 for paddings, sizes in paths for p in (1, 0)]
    return None


def _map_candidates(name: str, inputs: Sequence[torch.Tensor], output: torch.Tensor, target: Target) -> Candidates:
    shapes = [tuple(t.shape) for t in inputs]
    out_shape = tuple(output.shape)
    vectors = [i for i, s in enumerate(shapes) if len(s) == 2 or (len(s) == 4 and s[2:] == (1, 1) != out_shape[2:])]
    to_output = {i: _halvings(s[2:], out_shape[2:]) for i, s in enumerate(shapes) if len(s) == 4 and i not in vectors}
    reachable = {i: paddings for i, paddings in to_output.items() if paddings is not None}
    # the body starts at the coarsest input that reaches the output (finer ones come down to it
    # first, coarser ones are enlarged to it), or at the output's size when none does
    body_input = min(reachable, key=lambda i: len(reachable[i])) if reachable else None
    halvings = reachable[body_input] if body_input is not None else ()
    body_size = shapes[body_input][2:] if body_input is not None else out_shape[2:]
    maps = {i: _halvings(shapes[i][2:], body_size) for i in reachable}
    maps = {i: paddings for i, paddings in maps.items() if paddings is not None}
    ups = _upsamplers({i: inputs[i] for i in to_output if i not in maps}, body_size, target)
    if not maps and not ups:
        coarser = all(factor_between(shapes[i][2:], body_size) for i in to_output)
        why = ("every input map is coarser than the output, and the target has no op that enlarges a map by an "
               "integer factor (upsample, or pixel_shuffle after a conv) for a student to use" if coarser else
               f"no input map comes to the output's {body_size[0]}x{body_size[1]} by stride-2 convs or by an "
               "integer enlargement (a tensor of another layout, such as windows of tokens, is no image map)")
        raise DistillError(f"{name}: no student for inputs {shapes} -> output {out_shape} on {target.name}: {why}")
    channels = {i: s[1] for i, s in enumerate(shapes)}
    limit = target.limit("conv2d", "in_channels_max") or math.inf
    narrow = _narrowed({i: channels[i] for i in maps}, sum(channels[i] for i in ups), limit)
    gates: dict[int, bool] = {}
    if vectors:
        wanted = {i: len(shapes[i]) == 2 for i in vectors}
        probe = ConvStudent(channels, maps, out_shape[1], 4, max(len(halvings), 1), halvings, None, wanted, ups,
                            narrow)
        gates = wanted if runs_on(target, probe, inputs) else {}
    in_ch = sum(narrow.get(i, channels[i]) for i in maps) + sum(channels[i] for i in ups)
    skip = skip_input(inputs, output)
    if skip is not None and out_shape[1] + MIN_WIDTH > limit:
        skip = None  # the last conv could not read the skip beside the body
    limit -= out_shape[1] if skip is not None else 0
    shallowest = max(len(halvings), 1)
    depths = range(min(MAX_DEPTH, shallowest + 1), shallowest - 1, -1)
    label = "{} x conv3x3 of {}" + (" + skip merge" if skip is not None else "") + (" x gate" if gates else "")
    return [(label.format(depth, width),
             lambda width=width, depth=depth: ConvStudent(channels, maps, out_shape[1], width, depth, halvings, skip,
                                                          gates, ups, narrow))
            for width in widths(int(min(max(in_ch, out_shape[1]), limit))) for depth in depths]


def _narrowed(maps: dict[int, int], fixed: int, limit: float) -> dict[int, int]:
    """Where the maps a body concatenates (plus `fixed` channels) exceed what the target's convs read,
    each map's narrowed width, in proportion to its own, so the concat fits (Arch-Net splits its
    convs at 512 channels; a student is legal by construction instead)."""
    total = sum(maps.values()) + fixed
    if total <= limit:
        return {}
    room = limit - fixed
    return {i: max(1, int(room * ch // (total - fixed))) for i, ch in maps.items()}


def _upsamplers(coarse: dict[int, torch.Tensor], size: Sequence[int], target: Target) -> dict[int, tuple[str, int]]:
    """For each coarse input that `size` is an integer multiple of, the first upsampling form the target runs."""
    found = {}
    for i, tensor in coarse.items():
        factor = factor_between(tuple(tensor.shape[2:]), tuple(size))
        form = legal_form(target, tensor, factor) if factor is not None else None
        if form is not None:
            found[i] = (form, factor)
    return found


def _one_student(name: str, inputs: Sequence[torch.Tensor], output: torch.Tensor, region_kinds: set[str],
                 teacher: Cost, allowed: Cost, target: Target) -> Sized:
    candidates = token_candidates(name, inputs, output, region_kinds, target)
    if candidates is None:
        candidates = _map_candidates(name, inputs, output, target)
    return first_within_budget(candidates, inputs, teacher, allowed, target)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor"
    return f"a {type(value).__name__}"


def synthesize(name: str, inputs: Sequence[object], outputs: Sequence[torch.Tensor], teacher: Cost,
               target: Target, allowed: Cost | None = None, region_kinds: set[str] | None = None,
               size_only: frozenset[int] = frozenset(), region: fx.GraphModule | None = None,
               legalize: Legalize | None = None) -> Sized:
    """A student for one region from its recorded inputs and output tensors (see the module policy),
    costing at most `allowed` where any candidate does (default: the teacher region's cost `teacher`
    times DEFAULT_STUDENT_BUDGET); `region_kinds` are the teacher region's op kinds (whether it mixes
    tokens). The inputs at `size_only` positions are read by the region for their sizes alone (BERT's
    token ids, for the batch size): the student does not read them, as it reads no int. Where the teacher
    `region` has an exact or approximate legal form by `legalize` (fxrewrite.distill.teacher_form), that
    form (the exact one first) is the student when it costs at most what the target lets exact rewrites cost (`growth_max`, at least
    GROWTH_CAP) times `allowed`: it is the teacher's own maths and starts there, where a cheaper
    generic student starts from scratch; else when no other candidate fits and it is the cheaper."""
    unreal = [_describe(o) for o in outputs if not (isinstance(o, torch.Tensor) and o.is_floating_point())]
    if unreal or not outputs:
        raise DistillError(f"{name}: no student for a region that outputs {', '.join(unreal) or 'no tensor'}: a "
                           "student of legal ops writes real floating-point tensors; keep such ops (complex "
                           "numbers, sort indices, sizes) outside what the target must run, or rewrite them")
    if not inputs:
        return Sized(ConstantOutputs(outputs), "constant (the region reads no input: its outputs, recorded once)", 0.0)
    # a tensor without the batch (a position table made from parameters) is the same for every sample:
    # a student learns its effect as a constant, so it reads only the per-sample tensors
    batch = outputs[0].shape[0] if outputs[0].dim() else None
    positions = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor) and i not in size_only
                 and (batch is None or (value.dim() > 0 and value.shape[0] == batch))]
    tensors = [inputs[i] for i in positions]
    integers = [tuple(t.shape) for t in tensors if not t.is_floating_point()]
    if integers:
        raise DistillError(f"{name}: no student for integer inputs {integers} (token ids) on {target.name}: a "
                           "student's layers read floats, and the target has no one-hot encoding (one_hot and "
                           "cast, as archnet-transformer declares) to turn ids into them")
    allowed = allowed or teacher.scaled(DEFAULT_STUDENT_BUDGET)
    # a teacher form reads what its region reads (an image for its batch size alone is a legal shape read)
    every = [value for value in inputs if isinstance(value, torch.Tensor)]
    forms = teacher_forms(region, every, target, legalize) if region is not None and legalize is not None \
        and len(every) == len(inputs) else []
    costs = [module_cost(form, every, target) for form in forms]
    for form, cost in zip(forms, costs):  # the exact form first
        if cost.within(allowed.scaled(max(GROWTH_CAP, target.performance.growth_max or 0))):
            return Sized(form, form.label, cost.ratio(teacher))
    parts = len(outputs)
    sized = [_one_student(name, tensors, out, region_kinds or set(), teacher.divided(parts), allowed.divided(parts),
                          target) for out in outputs]
    student = sized[0].student if len(sized) == 1 else MultiOutputStudent([s.student for s in sized])
    if len(positions) != len(inputs):
        student = TensorInputs(student, positions)
    simple = len(sized) == 1 and len(positions) == len(inputs)  # only a plain student is regrown as it is
    generic = Sized(student, "; ".join(s.size for s in sized), sum(s.cost_ratio for s in sized) / len(sized),
                    sized[0].larger if simple else None, all(s.fits for s in sized))
    # where no generic student fits either, a form that starts as the teacher is taken if it is cheaper
    cheapest = min(zip(costs, forms), key=lambda pair: pair[0].ratio(teacher), default=None)
    if cheapest is not None and not generic.fits and cheapest[0].ratio(teacher) < generic.cost_ratio:
        return Sized(cheapest[1], cheapest[1].label, cheapest[0].ratio(teacher))
    return generic
