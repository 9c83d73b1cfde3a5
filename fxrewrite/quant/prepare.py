"""Before quantization, every batch norm that follows a conv or linear layer is folded into it, by
the fold-batch-norm pass, so each layer is quantized with the weights it will run with."""

from __future__ import annotations

import torch
from torch import fx, nn

from fxrewrite.ir import annotate_shapes
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import PassContext


def _trace_inside(module: nn.Module, arity: int) -> fx.GraphModule:
    """`module` traced through when called with `arity` positional inputs, which also covers
    `forward(*inputs)` (symbolic tracing alone cannot take len() of varargs)."""
    holder = nn.Module()
    holder.inner = module
    graph = fx.Graph()
    inputs = tuple(graph.placeholder(f"input_{i}") for i in range(arity))
    graph.output(graph.call_module("inner", inputs))
    call = fx.GraphModule(holder, graph)
    return fx.GraphModule(call, fx.Tracer().trace(call))


def fold_for_quantization(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """`module` as a graph with its batch norms folded into the layers before them: a GraphModule is
    rewritten in place; any other module is traced first (its submodules traced through)."""
    gm = module if isinstance(module, fx.GraphModule) else _trace_inside(module, len(example_inputs))
    annotate_shapes(gm, example_inputs)
    registered_passes()["fold-batch-norm"].run(gm, PassContext(example_inputs))
    return gm
