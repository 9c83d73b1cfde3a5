"""The token student, Arch-Net's translation student, for tokens (N, L, D) -> tokens (N, L, D').

Where the teacher region mixes tokens (attention: matmul, softmax, SDPA, einsum, roll), a mixer comes
first and its output is concatenated to the tokens: single-head self-attention, softmax(q k^T) v with
the 1/sqrt(d) scale folded into q, where the target runs matmul and softmax; else an FC layer over
the sequence axis (fixed length L, taken from the recorded input), started as the identity. Then
FC -> batch norm over the features (LayerNorm's stand-in) -> ReLU -> FC. Where an input has the
output's shape and points its way (a residual block whose add the target lacks), the last FC reads
[that input | hidden] and starts as input + FC(hidden). Hidden width at most max(D, D'), chosen
within the budget by fxrewrite.distill.sizing, widest first. It starts from the teacher's layers
where shapes allow (the default of fxrewrite.distill.students.base).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fxrewrite.distill.sizing import widths
from fxrewrite.distill.students.base import Candidates, Request, Student, runs_on, skip_input, student_kind
from fxrewrite.errors import DistillError
from fxrewrite.target import Target

#: op kinds through which a teacher region moves information between tokens
TOKEN_MIXING_KINDS = frozenset({"matmul", "softmax", "scaled_dot_product_attention", "multihead_attention", "einsum",
                                "roll"})


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


class TokenStudent(Student):
    """[mixer] -> FC -> feature batch norm -> ReLU -> FC [reading the skip input] (module docstring)."""

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


@student_kind(rank=20)
def candidates(request: Request) -> Candidates | None:
    """Token students for a token output from token inputs of its length, widest first; None otherwise."""
    name, inputs, output, target = request.name, request.inputs, request.output, request.target
    shapes, out_shape = request.shapes, request.out_shape
    if len(out_shape) != 3 or not all(len(s) == 3 and s[:2] == out_shape[:2] for s in shapes):
        return None
    in_dim, length = sum(s[-1] for s in shapes), out_shape[1]
    skip = skip_input(inputs, output)
    mixing = _mixer(name, request.region_kinds, inputs, in_dim, length, target)
    label = (f"{mixing[0]} + " if mixing else "") + "FC-BN-ReLU-FC of {}" + (" + skip merge" if skip is not None
                                                                              else "")

    def token_student(width: int) -> TokenStudent:
        mixer = mixing[1](width) if mixing else None
        return TokenStudent(in_dim, out_shape[-1], width, mixer, mixing[2](width) if mixing else 0, skip)

    return [(label.format(width), lambda width=width: token_student(width))
            for width in widths(max(in_dim, out_shape[-1]))]
