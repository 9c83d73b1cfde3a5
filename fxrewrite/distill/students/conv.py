"""The conv student, for regions whose output is an image map (N, C, H, W).

- NCHW -> NCHW (same or halved map): `depth` layers of 3x3 conv + batch norm + ReLU of `width`
  channels and a last 3x3 conv; one stride-2 conv per halving of the map. The widest width is
  max(input, output channels), capped by the target's in_channels_max; depth runs from the
  halvings plus one (at most MAX_DEPTH) down to the halvings (at least 1). Where an input has the
  output's shape and already points its way (a skip path), the last conv reads that input beside
  the body and starts as input + body (a residual block whose add the target cannot run);
  otherwise a batch norm follows it.
- Merges: inputs finer than the others (an FPN or U-Net level) first pass their own stride-2
  3x3 conv + batch norm + ReLU layers, one per halving, down to the coarsest map that feeds the
  body; inputs coarser than the body by an integer factor r are enlarged with the target's own ops
  and join the concat, in the first of these forms the target runs (checked by tracing a probe
  through the target's verdicts):
  1. nearest `upsample` by r, where the target resizes maps (the Ethos-U targets);
  2. a 3x3 conv writing r^2 phases per channel, then `pixel_shuffle(r)` (depth to space), where the
     target runs that but no resize (npu-generic): depthwise with channel multiplier r^2 where the
     target runs depthwise convs, dense otherwise. It starts as nearest upsampling (centre tap 1)
     and, trained, can learn smoother phases (bilinear's 3/4-1/4 weights are 3x3 phase kernels);
  3. none (archnet: no op makes a map larger): the input is left out (the body learns from the
     rest), and a region of only such inputs is refused with its shapes and that reason.
- Gates: vector inputs (N, C, 1, 1) or (N, C) beside a map (squeeze-and-excitation) multiply the
  body's output through a 1x1 conv started as the identity (the teacher's gate as it is) where
  the target multiplies a map by a per-channel vector; elsewhere they are left out, and the body
  learns the gate from the map it squeezes.
- Channel limits: where the maps the body concatenates exceed the channels the target's convs
  read, each first passes a 3x3 conv + batch norm + ReLU narrowing it in proportion, so every
  student is legal by construction.

It starts from the teacher's layers where shapes allow (the default of fxrewrite.distill.students.base).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fxrewrite.distill.sizing import MIN_WIDTH, widths
from fxrewrite.distill.students.base import Candidates, Request, Student, runs_on, skip_input, student_kind
from fxrewrite.errors import DistillError
from fxrewrite.rewrite.building import block_diagonal
from fxrewrite.target import Target

MAX_DEPTH = 3


#: the forms, in the order they are tried
FORMS = ("nearest", "depthwise-phases", "dense-phases")


def upsampler(form: str, channels: int, factor: int) -> nn.Module:
    """A layer enlarging (N, channels, H, W) to (N, channels, factor H, factor W), started as nearest."""
    if form == "nearest":
        return nn.Upsample(scale_factor=factor, mode="nearest")
    depthwise = form == "depthwise-phases"
    copies = torch.zeros(channels * factor * factor, 1, 3, 3)
    copies[:, :, 1, 1] = 1.0  # each channel written to its factor^2 phases, as nearest does
    conv = nn.Conv2d(channels, len(copies), 3, padding=1, groups=channels if depthwise else 1)
    with torch.no_grad():
        conv.weight.copy_(copies if depthwise else block_diagonal(copies, channels))
        conv.bias.zero_()
    return nn.Sequential(conv, nn.PixelShuffle(factor))


def legal_form(target: Target, coarse: torch.Tensor, factor: int) -> str | None:
    """The first form (FORMS) the target runs on a map like `coarse` enlarged by `factor`, or None."""
    sample = coarse[:1]
    return next((form for form in FORMS if runs_on(target, upsampler(form, sample.shape[1], factor), [sample])), None)


def factor_between(coarse: tuple[int, ...], fine: tuple[int, ...]) -> int | None:
    """The one integer factor r >= 2 with fine == r * coarse along both sides, or None."""
    if any(c < 1 or f % c for c, f in zip(coarse, fine)):
        return None
    ratios = {f // c for c, f in zip(coarse, fine)}
    return ratios.pop() if len(ratios) == 1 and min(ratios) >= 2 else None


def _conv_bn(in_ch: int, out_ch: int, stride: int, relu: bool, padding: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding), nn.BatchNorm2d(out_ch)]
    return layers + [nn.ReLU()] if relu else layers


class ConvStudent(Student):
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


@student_kind(rank=40)
def candidates(request: Request) -> Candidates | None:
    """Conv students for an image-map output (module docstring), widest first; None for any other output."""
    name, inputs, output, target = request.name, request.inputs, request.output, request.target
    if output.dim() != 4:
        return None
    shapes, out_shape = request.shapes, request.out_shape
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
