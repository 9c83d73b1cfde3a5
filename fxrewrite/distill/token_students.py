"""Students for regions whose output is not an image map: token sequences, vectors, and any shape
reached through a reshape.

Policy (the width within the budget is chosen by fxrewrite.distill.sizing, widest first):
- tokens (N, L, D) -> tokens (N, L, D'): Arch-Net's translation student. Where the teacher region
  mixes tokens (attention: matmul, softmax, SDPA, einsum, roll), a mixer comes first and its output
  is concatenated to the tokens: single-head self-attention, softmax(q k^T) v with the 1/sqrt(d)
  scale folded into q, where the target runs matmul and softmax; else an FC layer over the
  sequence axis (fixed length L, taken from the recorded input). Then FC -> batch norm over the
  features (LayerNorm's stand-in) -> ReLU -> FC. Where an input has the output's shape and points
  its way (a residual block whose add the target lacks), the last FC reads [that input | hidden]
  and starts as input + FC(hidden). Hidden width at most max(D, D').
- vectors (N, F) from vectors: FC -> ReLU -> FC, hidden width at most max(F, F').
- vectors (N, F) from maps or tokens (a head): the same on the flattened input.
- grids (N, H, W, C) -> (N, H, W, C') on a target with FC layers but no convs (Swin's
  channels-last maps): the token student over the H W positions as tokens, flattened in and
  unflattened out.
- anything else (a map to tokens, patchify): the flattened inputs through FC -> ReLU -> FC to
  prod(output shape), reshaped; it needs the target's reshape, and costs a dense layer over the
  whole input, so it is the fallback of last resort.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.distill.sizing import widths
from fxrewrite.errors import DistillError
from fxrewrite.ir import op_view
from fxrewrite.quant.prepare import fold_for_quantization
from fxrewrite.target import Target

#: op kinds through which a teacher region moves information between tokens
TOKEN_MIXING_KINDS = frozenset({"matmul", "softmax", "scaled_dot_product_attention", "multihead_attention", "einsum",
                                "roll"})
#: a skip path is taken where an input of the output's shape already points the output's way
SKIP_COSINE = 0.5
#: the widest hidden layer of a student on flattened inputs
MAX_FLAT_WIDTH = 4096

Candidates = list[tuple[str, Callable[[], nn.Module]]]


def runs_on(target: Target, module: nn.Module, inputs: Sequence[torch.Tensor]) -> bool:
    """Whether every op of `module`, as deployed (batch norms folded), is legal on `target`."""
    if target.allow_all_ops:
        return True
    with torch.no_grad():
        gm = fold_for_quantization(copy.deepcopy(module).eval(), tuple(inputs))
    return all(target.verdict(n).legal for n in gm.graph.nodes if not op_view(n).structural)


def skip_input(inputs: Sequence[torch.Tensor], output: torch.Tensor) -> int | None:
    """The input that already points the output's way (a residual path), if any."""
    return next((i for i, t in enumerate(inputs) if t.shape == output.shape
                 and F.cosine_similarity(t.flatten(), output.flatten(), dim=0) > SKIP_COSINE), None)


class FeatureBatchNorm(nn.Module):
    """Batch norm over the last (feature) axis of tokens (N, L, D)."""

    def __init__(self, features: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class SelfAttention(nn.Module):
    """Single-head softmax(q k^T) v at `width`, the 1/sqrt(width) scale folded into q's weights."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, width), nn.Linear(dim, width), nn.Linear(dim, width)
        with torch.no_grad():
            self.q.weight.mul_(width ** -0.5)
            self.q.bias.mul_(width ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(torch.matmul(self.q(x), self.k(x).transpose(1, 2)), dim=-1)
        return torch.matmul(weights, self.v(x))


class SequenceMixer(nn.Module):
    """An FC layer across the sequence axis of tokens (N, L, D), started as the identity."""

    def __init__(self, length: int):
        super().__init__()
        self.mix = nn.Linear(length, length)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(length) + 0.01 * torch.randn(length, length))
            self.mix.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x.transpose(1, 2)).transpose(1, 2)


class TokenStudent(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, width: int, mixer: nn.Module | None, mixed_dim: int,
                 skip_input: int | None):
        super().__init__()
        self.mixer, self.skip_input = mixer, skip_input
        self.up = nn.Linear(in_dim + (mixed_dim if mixer is not None else 0), width)
        self.norm = FeatureBatchNorm(width)
        self.down = nn.Linear(width + (out_dim if skip_input is not None else 0), out_dim)
        if skip_input is not None:  # starts as skip + FC(hidden)
            with torch.no_grad():
                self.down.weight[:, :out_dim] = torch.eye(out_dim)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat(inputs, -1) if len(inputs) > 1 else inputs[0]
        if self.mixer is not None:
            x = torch.cat([x, self.mixer(x)], -1)
        hidden = torch.relu(self.norm(self.up(x)))
        if self.skip_input is None:
            return self.down(hidden)
        return self.down(torch.cat([inputs[self.skip_input], hidden], -1))


class MlpStudent(nn.Module):
    """FC -> ReLU -> FC on the flattened inputs, reshaped to `out_shape` (per sample) where it has
    more than one dim."""

    def __init__(self, in_features: int, out_shape: Sequence[int], width: int, flatten: bool):
        super().__init__()
        self.flatten, self.out_shape = flatten, tuple(out_shape)
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, math.prod(out_shape)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        flat = [x.flatten(1) for x in inputs] if self.flatten else list(inputs)
        y = self.body(torch.cat(flat, -1) if len(flat) > 1 else flat[0])
        return y if len(self.out_shape) == 1 else y.reshape(-1, *self.out_shape)


class GridTokens(nn.Module):
    """A token student on (N, H, W, C) grids read as H W tokens: flatten, the student, unflatten."""

    def __init__(self, student: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.student, self.grid = student, grid

    def forward(self, *grids: torch.Tensor) -> torch.Tensor:
        return self.student(*(g.flatten(1, 2) for g in grids)).unflatten(1, self.grid)


def _mixer(name: str, region_kinds: set[str], inputs: Sequence[torch.Tensor], dim: int, length: int,
           target: Target) -> tuple[str, Callable[[int], nn.Module], Callable[[int], int]] | None:
    """How a token student mixes tokens on `target` (label, builder by width, its output width), or
    None where the teacher region does not mix them."""
    if not region_kinds & TOKEN_MIXING_KINDS:
        return None
    x = torch.cat(list(inputs), -1)
    if runs_on(target, SelfAttention(dim, 4), (x,)):
        return "attention", lambda width: SelfAttention(dim, width), lambda width: width
    if runs_on(target, SequenceMixer(length), (x,)):
        return "sequence FC", lambda width: SequenceMixer(length), lambda width: dim
    raise DistillError(f"{name}: the teacher mixes tokens ({', '.join(sorted(region_kinds & TOKEN_MIXING_KINDS))}) "
                       f"and {target.name} runs neither attention (matmul, softmax, transpose) nor an FC layer "
                       "across the sequence (transpose)")


def token_candidates(name: str, inputs: Sequence[torch.Tensor], output: torch.Tensor, region_kinds: set[str],
                     target: Target) -> Candidates | None:
    """Candidates for a region whose output is not an image map (module policy), widest first; None
    where the output is an image map (fxrewrite.distill.students builds those)."""
    shapes = [tuple(t.shape) for t in inputs]
    out_shape = tuple(output.shape)
    if len(out_shape) == 4:
        fc_without_convs = "linear" in target.ops and "conv2d" not in target.ops and not target.allow_all_ops
        if not fc_without_convs or not shapes or not all(len(s) == 4 and s[:3] == out_shape[:3] for s in shapes):
            return None
        # on a chip of FC layers without convs, a grid of the output's H x W (Swin's channels-last maps) is tokens
        flat = token_candidates(name, [t.flatten(1, 2) for t in inputs], output.flatten(1, 2), region_kinds, target)
        return [(f"{label} over the {out_shape[1]}x{out_shape[2]} grid as tokens",
                 lambda build=build: GridTokens(build(), out_shape[1:3])) for label, build in flat]
    if len(out_shape) == 3 and all(len(s) == 3 and s[:2] == out_shape[:2] for s in shapes):
        in_dim, length = sum(s[-1] for s in shapes), out_shape[1]
        skip = skip_input(inputs, output)
        mixing = _mixer(name, region_kinds, inputs, in_dim, length, target)
        label = (f"{mixing[0]} + " if mixing else "") + "FC-BN-ReLU-FC of {}" + (" + skip merge" if skip is not None
                                                                                  else "")

        def token_student(width: int) -> nn.Module:
            mixer = mixing[1](width) if mixing else None
            return TokenStudent(in_dim, out_shape[-1], width, mixer, mixing[2](width) if mixing else 0, skip)

        return [(label.format(width), lambda width=width: token_student(width))
                for width in widths(max(in_dim, out_shape[-1]))]
    if len(out_shape) == 2 and all(len(s) == 2 for s in shapes):
        features = sum(s[-1] for s in shapes)
        return [(f"MLP of {width}", lambda width=width: MlpStudent(features, out_shape[1:], width, flatten=False))
                for width in widths(max(features, out_shape[-1]))]
    features = sum(math.prod(s[1:]) for s in shapes)
    # widest first: up to the flattened size (capped), then down to the channels of the inputs
    narrow = max(max(s[1] for s in shapes), out_shape[-1]) if len(out_shape) == 2 else math.prod(out_shape[1:])
    steps = sorted(set(widths(min(max(features, narrow), MAX_FLAT_WIDTH)) + widths(min(narrow, MAX_FLAT_WIDTH))),
                   reverse=True)
    reshaped = "" if len(out_shape) == 2 else f", reshaped to {out_shape[1:]}"
    candidates = [(f"MLP of {width} on the flattened inputs{reshaped}",
                   lambda width=width: MlpStudent(features, out_shape[1:], width, flatten=True)) for width in steps]
    if not runs_on(target, candidates[-1][1](), inputs):
        raise DistillError(f"{name}: no student for inputs {shapes} -> output {out_shape} on {target.name}: it would "
                           "flatten the inputs and reshape an FC layer's output, and the target lacks flatten or "
                           "reshape")
    return candidates
