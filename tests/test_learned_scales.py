"""A quantized student's learned scales carried into ExecuTorch's int8 program instead of being
estimated again (fxrewrite.ship.learned_scales). The tests that quantize through ExecuTorch need the
ethos-u extra (`make test` installs it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxrewrite.quant import QuantLayer, calibrate, materialize, quantize_modules, scheme_for
from fxrewrite.ship.learned_scales import carry_learned_scales, without_fake_quantizers
from fxrewrite.ship.qdq import PER_CHANNEL, PER_TENSOR
from fxrewrite.target import Target


def _student(target: str = "ethos-u55-128", wbits: int | None = None, abits: int | None = None):
    """A small conv net quantized in `target`'s formats and calibrated, its learned grids moved off
    their calibrated values as training would move them; returns (graph form, layers, inputs)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 10)).eval()
    x = torch.randn(24, 3, 9, 9)
    quantize_modules(model, scheme_for(Target.load(target), wbits, abits))
    calibrate(model, lambda: model(x))
    layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
    with torch.no_grad():
        for layer in layers:
            layer.input_quant.scale.mul_(1.37)
    return materialize(model), layers, x


def test_the_fake_quantizers_are_taken_out_and_each_layer_keeps_its_grids_by_weight_name():
    gm, layers, x = _student()
    float_graph, learned = without_fake_quantizers(gm)
    assert not any(node.target in PER_TENSOR + PER_CHANNEL for node in float_graph.graph.nodes)
    assert any(node.target in PER_TENSOR for node in gm.graph.nodes)  # the student is left as it was
    assert list(learned) == ["quant_0_weight", "quant_1_weight", "quant_2_weight"]
    for layer, grids in zip(layers, learned.values()):
        assert grids.input.scale.item() == pytest.approx(layer.input_quant.scale.abs().item(), rel=1e-6)
        assert (grids.input.qmin, grids.input.qmax, grids.weight.qmin, grids.weight.qmax) == (-128, 127, -127, 127)
        assert grids.weight.scale.shape == (layer.layer.weight.shape[0],)
    # what is left is the student without its rounding: on-grid weights, inputs as they come
    expected = x
    for index, layer in enumerate(layers):
        weight = layer.weight_quant.grid(layer.layer.weight)[0]
        if index == 2:
            expected = nn.functional.linear(expected.flatten(1), weight, layer.layer.bias)
        else:
            expected = torch.relu(nn.functional.conv2d(expected, weight, layer.layer.bias, layer.layer.stride, 1))
    assert torch.allclose(float_graph(x), expected, atol=1e-5)
    assert without_fake_quantizers(float_graph) == (float_graph, {})


def _prepared(gm, x):
    from executorch.backends.arm.ethosu import EthosUCompileSpec
    from executorch.backends.arm.quantizer import EthosUQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    quantizer = EthosUQuantizer(EthosUCompileSpec("ethos-u55-128"))
    quantizer.set_global(get_symmetric_quantization_config())
    prepared = prepare_pt2e(torch.export.export(gm, (x[:1],)).module(check_guards=False), quantizer)
    with torch.no_grad():
        for one in x.split(1):
            prepared(one)
    return prepared


@pytest.mark.parametrize("target, bits", [("ethos-u55-128", None), ("archnet", 4)])
def test_the_program_quantizes_each_layer_with_the_scales_the_student_learned(target, bits):
    pytest.importorskip("executorch")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    gm, layers, x = _student(target, bits, bits)
    float_graph, learned = without_fake_quantizers(gm)
    prepared = _prepared(float_graph, x)
    assert carry_learned_scales(prepared, learned) == 3
    converted = convert_pt2e(prepared)
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    macs = [n for n in converted.graph.nodes if n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    assert len(macs) == 3
    for node, layer in zip(macs, layers):
        read, weight = node.args[0], node.args[1]
        assert read.target == dequantize
        _, scale, zero_point, low, _, _ = read.args
        quant = layer.input_quant
        assert scale == pytest.approx(quant.scale.abs().item(), rel=1e-6) and low == -128
        assert zero_point == int(quant.zero_point) - quant.qmin - 128  # the student's lower bound kept
        weight_scale = converted.get_buffer(weight.args[1].target)
        _, student_scale, _ = layer.weight_quant.grid(layer.layer.weight)
        assert torch.allclose(weight_scale, student_scale.float().expand_as(weight_scale), rtol=1e-6)


def test_a_grid_wider_than_the_programs_is_refused_in_one_line():
    pytest.importorskip("executorch")
    from fxrewrite.errors import UsageError

    gm, _, x = _student()
    float_graph, learned = without_fake_quantizers(gm)
    first = next(iter(learned))
    wide = learned[first].input.__class__(learned[first].input.scale, learned[first].input.zero_point, 0, 1023)
    learned[first] = learned[first].__class__(learned[first].weight, wide)
    with pytest.raises(UsageError, match=r"conv2d's input: the student's grid \[0, 1023\] is wider than the "
                                         r"program's \[-128, 127\]"):
        carry_learned_scales(_prepared(float_graph, x), learned)


def test_a_quantized_student_compiles_with_its_scales_and_is_compared_with_the_estimated_ones():
    pytest.importorskip("executorch")
    from fxrewrite.ship.ethos_u import compile_for_ethos_u

    gm, _, x = _student()
    inputs = [(one,) for one in x.split(1)]
    result = compile_for_ethos_u(gm, inputs[0], "ethos-u55-128", inputs[:16], held_out=inputs[16:])
    assert result.cpu_ops == () and result.learned_scale_layers == 3  # no fake quantizer left for the CPU
    assert result.quantization.held_out_inputs == result.quantization_estimated.held_out_inputs == 8
    # against the student itself: the program rounds where the student did, so it follows it closely
    assert result.quantization.relative_error < 0.1
    assert "with the scales the student learned on 3 layers" in result.describe()
    assert "every scale estimated by ExecuTorch instead: top-1 agreement" in result.describe()
