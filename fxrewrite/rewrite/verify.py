"""Verifying an exact rewrite against its teacher on fresh random inputs, on a basis that can fail.

Comparing final outputs proves nothing when the teacher's output does not depend on its input (a
randomly initialised googlenet answers the same for every image): any rewrite, right or wrong,
would agree. So the teacher is first run on two different inputs; when its output does not change,
every tensor that both graphs still compute under the same node name (what the rewrites left in
place, which reads what they produced) is compared instead, and the result says which basis it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from fxrewrite.rewrite.compare import relative_error

#: integer inputs (token ids) are drawn from [0, INT_INPUT_HIGH)
INT_INPUT_HIGH = 10
#: a teacher whose outputs on two random inputs differ by less than this does not read its input
CONSTANT_OUTPUT = 1e-6


@dataclass(frozen=True)
class Verification:
    max_relative_error: float
    #: "outputs", or "intermediate tensors" when the teacher's output ignores its input
    basis: str
    #: how many tensors were compared on each input
    tensors: int

    def describe(self) -> str:
        if self.basis == "outputs":
            return "outputs"
        return f"{self.tensors} intermediate tensors (the teacher's output does not depend on its input)"


def fresh_inputs(like: Sequence[torch.Tensor], seed: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like `like`: standard normal floats, integers in [0, INT_INPUT_HIGH)."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=generator, dtype=t.dtype) if t.is_floating_point()
                 else torch.randint(0, INT_INPUT_HIGH, t.shape, generator=generator, dtype=t.dtype)
                 if t.dtype != torch.bool else t for t in like)


def _tensors_by_name(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    interpreter = fx.Interpreter(gm, garbage_collect_values=False)
    interpreter.run(*inputs)
    return {node.name: value for node, value in interpreter.env.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and node.op != "get_attr"}


def _intermediate_error(gm: fx.GraphModule, teacher: fx.GraphModule,
                        inputs: tuple[torch.Tensor, ...]) -> tuple[float, int]:
    got, want = _tensors_by_name(gm, inputs), _tensors_by_name(teacher, inputs)
    shared = [name for name in got if name in want and got[name].shape == want[name].shape]
    return max((relative_error(got[n], want[n]) for n in shared), default=0.0), len(shared)


def verify(gm: nn.Module, teacher: nn.Module, example_inputs: Sequence[torch.Tensor],
           seeds: Sequence[int]) -> Verification:
    """The largest relative error of `gm` against `teacher` over fresh inputs, one per seed. When the
    teacher's output ignores its input, the intermediate tensors are compared on the first seed only:
    each of them is a check of its own, and interpreting both graphs per seed dominated lowering time."""
    runs = [fresh_inputs(example_inputs, seed) for seed in seeds]
    with torch.no_grad():
        # the second seed's outputs serve both the comparison and the test of whether the output varies
        second = runs[1] if len(runs) > 1 else fresh_inputs(example_inputs, seeds[0] + 1)
        wanted = [teacher(*runs[0]), teacher(*second)]
        varies = relative_error(wanted[0], wanted[1]) > CONSTANT_OUTPUT
        if varies or not isinstance(gm, fx.GraphModule) or not isinstance(teacher, fx.GraphModule):
            wanted = wanted[:len(runs)] + [teacher(*xs) for xs in runs[2:]]
            return Verification(max(relative_error(gm(*xs), want) for xs, want in zip(runs, wanted)), "outputs", 1)
        error, tensors = _intermediate_error(gm, teacher, runs[0])
    return Verification(error, "intermediate tensors", tensors)
