"""Verifying an exact rewrite against its teacher on a fresh random input, on a basis that can fail.

Comparing final outputs alone proves nothing when the teacher's output does not depend on its input
(a randomly initialised googlenet answers the same for every image): any rewrite, right or wrong,
would agree. So besides the outputs, every tensor that both graphs compute under the same node name
from changed operands (the nodes the rewrites left in place that read what they produced) is
compared on the same input: one interpreted run of each graph checks every rewrite where its result
is read, whether or not the output varies, for the price of the two runs an output-only check costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from fxrewrite.frontend.inputs import INT_INPUT_HIGH
from fxrewrite.metrics import relative_error


@dataclass(frozen=True)
class Verification:
    max_relative_error: float
    #: how many intermediate tensors were compared besides the outputs
    tensors: int
    #: the inputs compared on, where not a random one
    on: str = ""

    def describe(self) -> str:
        what = "outputs" if not self.tensors else f"outputs and {self.tensors} intermediate tensors"
        return f"{what} on {self.on}" if self.on else what


def fresh_inputs(like: Sequence[torch.Tensor], seed: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like `like`: standard normal floats, integers in [0, INT_INPUT_HIGH)."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=generator, dtype=t.dtype) if t.is_floating_point()
                 else torch.randint(0, INT_INPUT_HIGH, t.shape, generator=generator, dtype=t.dtype)
                 if t.dtype != torch.bool else t for t in like)


class NodeRecorder(fx.Interpreter):
    """Runs a graph and keeps copies of the floating-point tensors of the named nodes as they were
    computed (a later in-place op, as nn.SiLU(inplace=True) applies to its input, would change them)."""

    def __init__(self, gm: fx.GraphModule, keep: set[str]):
        super().__init__(gm)
        self.keep, self.values = keep, {}

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if node.name in self.keep and isinstance(value, torch.Tensor) and value.is_floating_point():
            self.values[node.name] = value.clone()
        return value


def _computed(node: fx.Node) -> bool:
    return node.op in ("call_function", "call_method", "call_module")


def _frontier(gm: fx.GraphModule, teacher: fx.GraphModule) -> set[str]:
    """Nodes both graphs compute under one name whose operands changed: where what the rewrites
    produced is read. A node whose operands did not change computes what the teacher's does from
    tensors already compared, so comparing it again would add nothing but time."""
    operands = {n.name: [a.name for a in n.all_input_nodes] for n in teacher.graph.nodes if _computed(n)}
    return {n.name for n in gm.graph.nodes
            if _computed(n) and n.name in operands and [a.name for a in n.all_input_nodes] != operands[n.name]}


def verify(gm: nn.Module, teacher: nn.Module, example_inputs: Sequence[torch.Tensor], seed: int) -> Verification:
    """The largest relative error of `gm` against `teacher` on a fresh input: over the outputs and,
    when both are graphs, over every tensor both compute under one name from changed operands."""
    return verify_on(gm, teacher, fresh_inputs(example_inputs, seed))


def verify_on(gm: nn.Module, teacher: nn.Module, inputs: Sequence[torch.Tensor], on: str = "") -> Verification:
    """As `verify`, on these inputs (`on` names them in the report)."""
    with torch.no_grad():
        if not isinstance(gm, fx.GraphModule) or not isinstance(teacher, fx.GraphModule):
            return Verification(relative_error(gm(*inputs), teacher(*inputs)), 0, on)
        frontier = _frontier(gm, teacher)
        got, want = NodeRecorder(gm, frontier), NodeRecorder(teacher, frontier)
        error = relative_error(got.run(*inputs), want.run(*inputs))
        compared = [n for n in got.values if n in want.values and got.values[n].shape == want.values[n].shape]
        error = max([error, *(relative_error(got.values[n], want.values[n]) for n in compared)])
    return Verification(error, len(compared), on)
