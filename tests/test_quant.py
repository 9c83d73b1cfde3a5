"""Quantization: the target's formats, the fake quantizers' grids, BN folding, the graph form, the verifier."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import symbolic
from fxrewrite.frontend import capture
from fxrewrite.ir import annotate_shapes, is_fake_quant, op_view
from fxrewrite.errors import UsageError
from fxrewrite.export import save_pt2
from fxrewrite.legality import check
from fxrewrite.quant import (FakeQuant, QuantLayer, calibrate, fold_for_quantization, materialize, quantize_modules,
                             scheme_for)
from fxrewrite.target import QuantFormat, Target

ARCHNET = Target.load("archnet")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 10))
    with torch.no_grad():  # batch norm with statistics of its own, so folding it is not a no-op
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(-2, 2)
    return net.eval()


def quantized(net: nn.Module, wbits: int, abits: int, method: str = "lsq") -> tuple[nn.Module, torch.Tensor]:
    x = torch.rand(16, 1, 9, 9)
    model = fold_for_quantization(copy.deepcopy(net), (x,))
    quantize_modules(model, scheme_for(ARCHNET, wbits, abits, method))
    calibrate(model, lambda: model(x))
    return model, x


@pytest.mark.parametrize(("qmin", "qmax", "name"), [(0, 15, "uint4"), (-7, 7, "int4"), (-8, 7, "int4"),
                                                    (-1, 1, "int2"), (-127, 127, "int8"), (0, 255, "uint8")])
def test_a_grid_names_its_format(qmin, qmax, name):
    assert QuantFormat.of_range(qmin, qmax).name == name


def test_an_odd_grid_is_no_format():
    assert QuantFormat.of_range(-3, 5) is None


def test_the_scheme_takes_the_targets_formats():
    scheme = scheme_for(ARCHNET, 2, 4, "dorefa")
    assert (scheme.weights.name, scheme.activations.name, scheme.weight_granularity) == ("int2", "uint4", "per-channel")
    assert scheme_for(ARCHNET, None, None).weights.name == "int8"


@pytest.mark.parametrize(("wbits", "abits", "message"), [(3, 4, "--wbits 3: target archnet declares weight formats "
                                                                  "int2, int4, int8"),
                                                         (4, 2, "--abits 2: target archnet declares activation")])
def test_undeclared_bit_widths_are_refused_with_the_choices(wbits, abits, message):
    with pytest.raises(UsageError, match=message):
        scheme_for(ARCHNET, wbits, abits)


@pytest.mark.parametrize("method", ["lsq", "dorefa"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weights_land_on_a_symmetric_grid_per_channel(method, bits):
    weight = torch.randn(5, 3, 3, 3)
    quant = FakeQuant(QuantFormat(f"int{bits}", bits, True), "weights", method, channels=5)
    quant.calibrate(weight)
    values, scale, zero_point = quant.grid(weight)
    levels = values / scale[:, None, None, None]
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert levels.round().abs().max() <= 2 ** (bits - 1) - 1 and torch.all(zero_point == 0)
    torch.testing.assert_close(quant(weight), values)


def test_unsigned_activations_take_a_zero_point_for_negative_values():
    quant = FakeQuant(QuantFormat("uint4", 4, False), "activations", "lsq")
    x = torch.linspace(-1, 3, 1000)
    quant.calibrate(x)
    assert 0 < quant.zero_point.item() < 15
    assert len(torch.unique(quant(x))) <= 16 and quant(x).min() < 0


def test_lsq_learns_its_scale_and_dorefa_does_not():
    for method, learns in (("lsq", True), ("dorefa", False)):
        layer = QuantLayer(nn.Conv2d(2, 3, 3, padding=1), scheme_for(ARCHNET, 4, 4, method)).train()
        layer(torch.rand(2, 2, 5, 5)).sum().backward()
        assert (layer.input_quant.scale.grad is not None) == learns


def test_folding_batch_norms_is_exact_in_sequentials_and_graphs():
    net, x = small_net(), torch.randn(4, 1, 9, 9)
    folded = fold_for_quantization(copy.deepcopy(net), (x,))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    graph = fold_for_quantization(symbolic(copy.deepcopy(net), x), (x,))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in graph.modules())
    torch.testing.assert_close(graph(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["lsq", "dorefa"])
def test_the_graph_form_computes_what_the_quantized_model_does_and_passes_the_verifier(method, tmp_path):
    model, x = quantized(small_net(), 4, 4, method)
    graph = annotate_shapes(materialize(model), (x,))
    torch.testing.assert_close(graph(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, (QuantLayer, FakeQuant)) for m in graph.modules())
    fake_quants = [n for n in graph.graph.nodes if "fake_quantize" in str(n.target)]
    assert len(fake_quants) == 6  # weights and input of two convs and a linear
    report = check(graph, ARCHNET)
    assert report.all_legal, [r.reason for r in report.illegal]
    _, batch_note = save_pt2(graph, (x[:1],), tmp_path / "q.pt2")
    assert batch_note == ""  # fake quantizers keep the batch free (their shape functions are registered)
    program = torch.export.load(tmp_path / "q.pt2")
    torch.testing.assert_close(program.module()(x), graph(x))


def test_the_verifier_rejects_formats_the_target_does_not_declare():
    model, x = quantized(small_net(), 2, 4)
    report = check(annotate_shapes(materialize(model), (x,)), Target.load("npu-generic"))
    reasons = {r.reason for r in report.illegal}
    assert "weights format int2 not in {int8} (declared by npu-generic)" in reasons
    assert "activations format uint4 not in {int8} (declared by npu-generic)" in reasons


def test_a_float_layer_in_a_quantized_graph_is_illegal():
    net = small_net()
    model, x = quantized(net, 4, 4)
    linear = next(n for n, m in model.named_modules() if isinstance(m, QuantLayer) and isinstance(m.layer, nn.Linear))
    parent, _, child = linear.rpartition(".")
    model.get_submodule(parent)._modules[child] = copy.deepcopy(net[6])  # the linear left float
    report = check(annotate_shapes(materialize(model), (x,)), ARCHNET)
    assert [r.kind for r in report.illegal] == ["linear"]
    assert "linear reads float32 weights and input in a quantized graph" in report.illegal[0].reason


def test_post_training_4_bit_error_is_bounded_and_8_bit_is_close():
    net = fold_for_quantization(small_net(), (torch.rand(16, 1, 9, 9),))
    errors = {}
    for bits in (4, 8):
        model, x = quantized(net, bits, bits)
        want = net(x)
        errors[bits] = ((model(x) - want).norm() / want.norm()).item()
    assert errors[8] < 0.02 and errors[4] < 0.25 and errors[8] < errors[4]


def test_layers_of_an_exported_graph_are_quantized_too():
    """Regression: convs and FC layers that torch.export writes as aten calls on get_attr weights were
    left float, so a 4-bit lowering of a .pt2 ended with an illegal float linear."""
    from fxrewrite.quant import post_training_quantize
    net, x = small_net(), torch.rand(16, 1, 9, 9)
    gm = capture(net, (x,), "export")
    result = post_training_quantize(gm, scheme_for(ARCHNET, 4, 4), (x,), (x[:4],))
    assert check(result.gm, ARCHNET).all_legal
    layers = [n for n in result.gm.graph.nodes if op_view(n).kind in ("conv2d", "linear")]
    assert len(layers) == 3 and all(is_fake_quant(n.args[1]) and is_fake_quant(n.args[0]) for n in layers)
