"""A quantized student's learned scales carried into ExecuTorch's int8 program.

fxrewrite's graph form of a quantized model (fxrewrite.quant) reads every conv2d's and linear's
input and weight through fake quantizers whose scales were learned in distillation. ExecuTorch's
quantizer (PT2E) places observers of its own and would estimate those scales again. Here the fake
quantizers are taken out before export, remembered by the layer's weight attribute (a name
torch.export keeps), and after calibration the observers on that layer's input and weight answer
with the learned scale and zero point instead of their estimate.

A student grid narrower than the program's (4 bits in an int8 program) keeps its scale and its
lower bound: every value of the student's grid lies on the program's, only the clamp is wider.
Tensors the student quantized nowhere (the output of an add, of the last layer) keep ExecuTorch's
estimates.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

from fxrewrite.errors import UsageError
from fxrewrite.ship.qdq import PER_CHANNEL, PER_TENSOR


@dataclass(frozen=True)
class Grid:
    """A fake quantizer's parameters: value = (q - zero_point) * scale, q in [qmin, qmax]."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int


@dataclass(frozen=True)
class LearnedLayer:
    weight: Grid
    input: Grid


def _grid(node: fx.Node, gm: fx.GraphModule) -> Grid:
    def value(arg: object) -> torch.Tensor:
        return gm.get_buffer(arg.target) if isinstance(arg, fx.Node) else torch.tensor(arg)

    if node.target in PER_TENSOR:
        _, scale, zero_point, qmin, qmax = node.args
    else:
        _, scale, zero_point, _, qmin, qmax = node.args
    return Grid(value(scale).float(), value(zero_point).long(), int(qmin), int(qmax))


def without_fake_quantizers(module: nn.Module) -> tuple[nn.Module, dict[str, LearnedLayer]]:
    """`module` with its fake quantizers taken out (a copy; `module` itself when it has none), and
    per quantized layer, by its weight attribute's name, the grids of its weight and input."""
    if not isinstance(module, fx.GraphModule):
        return module, {}
    fake = PER_TENSOR + PER_CHANNEL
    if not any(node.target in fake for node in module.graph.nodes):
        return module, {}
    gm = copy.deepcopy(module)
    learned: dict[str, LearnedLayer] = {}
    for node in gm.graph.nodes:
        inputs = node.args[:2]
        if len(inputs) == 2 and all(isinstance(a, fx.Node) and a.target in fake for a in inputs):
            x, weight = inputs
            if weight.args[0].op == "get_attr":
                learned[weight.args[0].target] = LearnedLayer(_grid(weight, gm), _grid(x, gm))
    for node in [n for n in gm.graph.nodes if n.target in fake]:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, learned


def _answer_with(observer: nn.Module, grid: Grid, tensor: str) -> None:
    """`observer` answers with `grid` from now on. Its instance is changed, not replaced: the bias's
    derived observer holds the input's and the weight's observers themselves."""
    low, high = observer.quant_min, observer.quant_max
    if not (grid.qmax - grid.qmin <= high - low):
        raise UsageError(f"{tensor}: the student's grid [{grid.qmin}, {grid.qmax}] is wider than the program's "
                         f"[{low}, {high}]")
    estimated_scale, estimated_zero_point = observer.calculate_qparams()
    scale = grid.scale.expand(estimated_scale.shape).to(estimated_scale.dtype).clone()
    # same lower bound: q_program = q_student - qmin_student + qmin_program
    zero_point = (grid.zero_point - grid.qmin + low).expand(estimated_zero_point.shape)
    qparams = (scale, zero_point.to(estimated_zero_point.dtype).clone())
    observer.calculate_qparams = lambda **_: qparams


def carry_learned_scales(prepared: fx.GraphModule, learned: dict[str, LearnedLayer]) -> int:
    """Make the observers of `prepared` (after prepare_pt2e and calibration) on each learned layer's
    input and weight answer with the student's grids; returns how many layers were found."""
    def observer_of(arg: object) -> nn.Module | None:
        if isinstance(arg, fx.Node) and arg.op == "call_module":
            return prepared.get_submodule(arg.target)
        return None

    carried = 0
    for node in prepared.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2 or observer_of(node.args[1]) is None:
            continue
        weight = node.args[1].args[0]
        layer = learned.get(weight.target) if weight.op == "get_attr" else None
        if layer is None:
            continue
        _answer_with(observer_of(node.args[1]), layer.weight, f"{node.name}'s weight")
        if (observer := observer_of(node.args[0])) is not None:
            _answer_with(observer, layer.input, f"{node.name}'s input")
        carried += 1
    return carried
