"""Before quantization, every batch norm that follows a conv or linear layer is folded into it, by
the fold-batch-norm pass, so each layer is quantized with the weights it will run with; and layers
called as functions (ATen graphs) become modules, the form fake quantization wraps."""

from __future__ import annotations

import torch
from torch import fx, nn

from fxrewrite.ir import annotate_shapes, op_view
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import Decline, PassContext
from fxrewrite.rewrite.building import conv2d, conv_weights, linear, plain_conv_weights


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
    """`module` as a graph with its batch norms folded into the layers before them and its functional
    layers as modules: a GraphModule is rewritten in place; any other module is traced first."""
    gm = module if isinstance(module, fx.GraphModule) else _trace_inside(module, len(example_inputs))
    annotate_shapes(gm, example_inputs)
    registered_passes()["fold-batch-norm"].run(gm, PassContext(example_inputs))
    as_layer_modules(gm)
    return gm


def as_layer_modules(gm: fx.GraphModule) -> int:
    """Convs and FC layers called as functions on constant weights (ATen graphs from torch.export)
    as nn.Conv2d / nn.Linear modules, which is the form fake quantization wraps; returns how many."""
    replaced = 0
    for node in list(gm.graph.nodes):
        view = op_view(node) if node.op == "call_function" else None
        if view is None or view.kind not in ("conv2d", "linear"):
            continue
        weights = plain_conv_weights(view) if view.kind == "conv2d" else conv_weights(view)
        if isinstance(weights, Decline):
            continue
        weight, bias = weights
        attrs = view.attrs
        module = (conv2d(weight, bias, stride=attrs["stride"], padding=attrs["padding"], groups=attrs["groups"])
                  if view.kind == "conv2d" else linear(weight, bias))
        name = f"quantizable_{view.kind}_{replaced}"
        gm.add_submodule(name, module)
        with gm.graph.inserting_before(node):
            layer = gm.graph.call_module(name, (view.inputs[0],))
        layer.meta = dict(node.meta)
        node.replace_all_uses_with(layer)
        gm.graph.erase_node(node)
        replaced += 1
    if replaced:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return replaced
