"""The graph form of a quantized model (see the package docstring): what torch.export keeps and
`fxrewrite check` verifies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.quant.layers import QuantLayer


def _register_shape_functions() -> None:
    """Shape functions for the kernels torch.export traces the fake quantizers into. torch 2.14 has
    none, so a graph reading them could be exported at its example's batch size only (export runs
    the real kernel on concrete shapes); with these, the written .pt2 keeps its batch free."""
    def per_tensor(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                   qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)

    def per_channel(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int,
                    qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)

    for name, function in (("aten::fake_quantize_per_tensor_affine_cachemask", per_tensor),
                           ("aten::fake_quantize_per_channel_affine_cachemask", per_channel)):
        try:
            torch.library.register_fake(name, function)
        except RuntimeError:  # a later torch registers its own
            pass


_register_shape_functions()


class _QuantTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, QuantLayer) or super().is_leaf_module(m, qualified_name)


def materialize(module: nn.Module) -> fx.GraphModule:
    """`module` traced flat, every QuantLayer written in the graph form of the module docstring."""
    gm = fx.GraphModule(module, _QuantTracer().trace(module))
    graph = gm.graph
    for index, node in enumerate(n for n in list(graph.nodes) if n.op == "call_module"
                                 and isinstance(gm.get_submodule(n.target), QuantLayer)):
        layer: QuantLayer = gm.get_submodule(node.target)
        inner = layer.layer
        values, scale, zero_point = layer.weight_quant.grid(inner.weight)
        prefix = f"quant_{index}"
        # parameters (frozen), so that parameter counts and optimizers see the layer's weights
        gm.register_parameter(f"{prefix}_weight", nn.Parameter(values.detach().clone(), requires_grad=False))
        if inner.bias is not None:
            gm.register_parameter(f"{prefix}_bias", nn.Parameter(inner.bias.detach().clone(), requires_grad=False))
        wq = layer.weight_quant
        with graph.inserting_before(node):
            weight = graph.get_attr(f"{prefix}_weight")
            if wq.per_channel:
                gm.register_buffer(f"{prefix}_weight_scale", scale.float())
                gm.register_buffer(f"{prefix}_weight_zero_point", zero_point.round().to(torch.int32))
                weight = graph.call_function(torch.fake_quantize_per_channel_affine, (
                    weight, graph.get_attr(f"{prefix}_weight_scale"), graph.get_attr(f"{prefix}_weight_zero_point"),
                    0, wq.qmin, wq.qmax))
            else:
                weight = graph.call_function(torch.fake_quantize_per_tensor_affine,
                                             (weight, float(scale), 0, wq.qmin, wq.qmax))
            aq = layer.input_quant
            x = graph.call_function(torch.fake_quantize_per_tensor_affine, (
                node.args[0], float(aq.scale.detach().abs().clamp_min(1e-8)), int(aq.zero_point), aq.qmin, aq.qmax))
            bias = graph.get_attr(f"{prefix}_bias") if inner.bias is not None else None
            if isinstance(inner, nn.Conv2d):
                out = graph.call_function(F.conv2d, (x, weight, bias, inner.stride, inner.padding, inner.dilation,
                                                     inner.groups))
            else:
                out = graph.call_function(F.linear, (x, weight, bias))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
