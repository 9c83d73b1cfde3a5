"""The module, functional and ATen forms of one op produce the same canonical view."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite import ir as ops
from fxrewrite.frontend import capture
from fxrewrite.ir import op_view, vocabulary
from fxrewrite.target import Target

from conftest import compute_views, exported, symbolic


class Functional(nn.Module):
    """Holds the parameters of `template` and calls `fn(x, module)` so that tracing records a function."""

    def __init__(self, template: nn.Module, fn):
        super().__init__()
        self.template = template
        self.fn = fn

    def forward(self, x):
        return self.fn(self.template, x)


def conv(**kw):
    return nn.Conv2d(**{"in_channels": 6, "out_channels": 6, "kernel_size": 3, **kw})


CASES = {
    "conv2d": (conv(stride=2, padding=1, bias=True),
               lambda m, x: F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups), (1, 6, 9, 11)),
    "conv2d-depthwise": (conv(kernel_size=7, padding=3, groups=6, bias=False),
                         lambda m, x: F.conv2d(x, m.weight, None, 1, 3, 1, 6), (1, 6, 9, 11)),
    "conv2d-same": (conv(kernel_size=5, padding="same"),
                    lambda m, x: F.conv2d(x, m.weight, m.bias, padding="same"), (1, 6, 9, 11)),
    "conv1d": (nn.Conv1d(4, 8, 3, dilation=2), lambda m, x: F.conv1d(x, m.weight, m.bias, 1, 0, 2), (1, 4, 17)),
    "linear": (nn.Linear(5, 7), lambda m, x: F.linear(x, m.weight, m.bias), (2, 5)),
    "batch_norm": (nn.BatchNorm2d(6),
                   lambda m, x: F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.1, m.eps),
                   (1, 6, 5, 5)),
    "layer_norm": (nn.LayerNorm(6), lambda m, x: F.layer_norm(x, (6,), m.weight, m.bias, m.eps), (1, 5, 6)),
    "group_norm": (nn.GroupNorm(2, 6), lambda m, x: F.group_norm(x, 2, m.weight, m.bias, m.eps), (1, 6, 5, 5)),
    "relu": (nn.ReLU(), lambda m, x: F.relu(x), (1, 6, 5, 5)),
    "relu6": (nn.ReLU6(), lambda m, x: F.relu6(x), (1, 6, 5, 5)),
    "gelu": (nn.GELU(approximate="tanh"), lambda m, x: F.gelu(x, approximate="tanh"), (1, 6, 5, 5)),
    "silu": (nn.SiLU(), lambda m, x: F.silu(x), (1, 6, 5, 5)),
    "hardswish": (nn.Hardswish(), lambda m, x: F.hardswish(x), (1, 6, 5, 5)),
    "sigmoid": (nn.Sigmoid(), lambda m, x: torch.sigmoid(x), (1, 6, 5, 5)),
    "tanh": (nn.Tanh(), lambda m, x: torch.tanh(x), (1, 6, 5, 5)),
    "softmax": (nn.Softmax(dim=-1), lambda m, x: F.softmax(x, dim=3), (1, 6, 5, 5)),
    "max_pool2d": (nn.MaxPool2d(3, 2, 1), lambda m, x: F.max_pool2d(x, 3, 2, 1), (1, 6, 9, 9)),
    "avg_pool2d": (nn.AvgPool2d(2), lambda m, x: F.avg_pool2d(x, 2), (1, 6, 9, 9)),
    "adaptive_avg_pool2d": (nn.AdaptiveAvgPool2d(1), lambda m, x: F.adaptive_avg_pool2d(x, (1, 1)), (1, 6, 9, 9)),
    "flatten": (nn.Flatten(), lambda m, x: torch.flatten(x, 1), (2, 6, 3, 3)),
    "embedding": (nn.Embedding(11, 4), lambda m, x: F.embedding(x, m.weight), None),
    "dropout": (nn.Dropout(0.25), lambda m, x: F.dropout(x, 0.25, False), (1, 6, 5, 5)),
}


@pytest.mark.parametrize("name", CASES)
def test_module_functional_and_aten_forms_agree(name):
    module, fn, shape = CASES[name]
    x = torch.randint(0, 11, (2, 3)) if shape is None else torch.randn(shape)
    forms = {
        "module": symbolic(nn.Sequential(module), x),
        "functional": symbolic(Functional(module, fn), x),
        "aten": exported(nn.Sequential(module), x),
    }
    views = {form: compute_views(gm) for form, gm in forms.items()}
    for form, found in views.items():
        assert len(found) == 1, f"{form} form of {name}: {[v.kind for v in found]}"
    reference = views["module"][0]
    assert reference.kind != ops.UNKNOWN
    for form in ("functional", "aten"):
        assert (views[form][0].kind, dict(views[form][0].attrs)) == (reference.kind, dict(reference.attrs)), form
    assert views["module"][0].source.startswith("module")
    assert views["functional"][0].source.startswith("function")
    assert views["aten"][0].source.startswith("function aten.")


def test_conv_attributes_are_normalized():
    view = compute_views(symbolic(nn.Sequential(conv(kernel_size=7, padding=3, groups=6, stride=2)), torch.randn(1, 6, 9, 9)))[0]
    assert dict(view.attrs) == {
        "kernel": (7, 7), "stride": (2, 2), "padding": (3, 3), "dilation": (1, 1), "groups": 6,
        "grouping": "depthwise", "in_ch": 6, "out_ch": 6, "bias": True, "padding_mode": "zeros",
    }
    assert "grouping=depthwise" in view.describe() and "dilation" not in view.describe()


class Elementwise(nn.Module):
    def forward(self, x, y):
        a = x + y
        b = torch.mul(a, 2.0)
        c = a.sub(y)
        d = operator.truediv(c, y)
        e = torch.cat([a, b, c, d], dim=-3)
        f = e.view(1, -1).reshape(1, 4, -1).permute(0, 2, 1).transpose(1, 2)
        return f, x.flatten(1)


def test_method_function_and_aten_elementwise_forms():
    x, y = torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5)
    expected = ["add", "mul", "sub", "div", "cat", "reshape", "reshape", "permute", "transpose", "flatten"]
    for gm in (symbolic(Elementwise(), x, y), exported(Elementwise(), x, y)):
        views = compute_views(gm)
        assert [v.kind for v in views] == expected
        assert views[0].attrs == {"operands": "tensor", "broadcast": False}
        assert views[1].attrs == {"operands": "scalar", "broadcast": False}
        assert views[4].attrs == {"dim": 1, "num_inputs": 4}
        assert views[7].attrs == {"dims": (0, 2, 1)}
        assert views[8].attrs == {"dims": (1, 2)}


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        out, _ = self.mha(x, x, x)
        return F.scaled_dot_product_attention(out, out, out, is_causal=True)


def test_attention_forms():
    gm = symbolic(Attention(), torch.randn(1, 5, 8))
    kinds = [v.kind for v in compute_views(gm)]
    assert kinds == ["multihead_attention", "scaled_dot_product_attention"]
    sdpa = compute_views(gm)[-1]
    assert sdpa.attrs == {"causal": True, "masked": False}
    assert len(sdpa.inputs) == 3
    aten_kinds = {v.kind for v in compute_views(exported(Attention(), torch.randn(1, 5, 8)))}
    assert "scaled_dot_product_attention" in aten_kinds and ops.UNKNOWN not in aten_kinds


class Unusual(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1)


def test_unknown_op_is_illegal_everywhere_with_its_name():
    view = compute_views(symbolic(Unusual(), torch.randn(2, 3)))[0]
    assert view.kind == ops.UNKNOWN
    assert "cumsum" in view.attrs["target"]
    verdict = Target.load("cpu-reference").verdict(view.node)
    assert not verdict.legal and "cumsum" in verdict.reason


def test_overridden_forward_is_not_mistaken_for_its_base_class():
    class Scaled(nn.ReLU):
        def forward(self, x):
            return super().forward(x) * 2

    tracer = type("Leaf", (fx.Tracer,), {"is_leaf_module": lambda self, m, q: isinstance(m, Scaled)})()
    graph = tracer.trace(nn.Sequential(Scaled()))
    gm = fx.GraphModule(tracer.root, graph)
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    assert ops.op_view(node).kind == ops.UNKNOWN


def test_getitem_on_a_tensor_is_a_slice_and_shape_arithmetic_is_structural():
    class Index(nn.Module):
        def forward(self, x):
            return x[:, 0] * (x.shape[1] // 2)

    views = [ops.op_view(n) for n in symbolic(Index(), torch.randn(2, 3)).graph.nodes]
    kinds = [v.kind for v in views]
    assert kinds == ["input", "slice", "shape", "shape", "shape", "mul", "output"]


def test_duplicate_registration_is_an_error(monkeypatch):
    clash = vocabulary.OpDef("relu_again", "a second claim on F.relu", functions=(F.relu,))
    monkeypatch.setattr(vocabulary, "VOCABULARY", vocabulary.VOCABULARY + (clash,))
    with pytest.raises(RuntimeError, match="registered for both relu and relu_again"):
        vocabulary._build_indexes()


def test_adaptive_avg_pool1d_is_known_in_every_form():
    """Swin's pooling (transformers' SwinModel) was an unknown op in both frontends."""
    model = nn.Sequential(nn.Flatten(2), nn.AdaptiveAvgPool1d(1)).eval()
    x = torch.randn(2, 4, 3, 5)
    for frontend in ("symbolic", "export"):
        gm = capture(model, (x,), frontend)
        pools = [op_view(n) for n in gm.graph.nodes if op_view(n).kind == "adaptive_avg_pool1d"]
        assert len(pools) == 1 and pools[0].attrs == {"output_size": 1}, frontend
    functional = capture(FunctionalPool1d().eval(), (x.flatten(2),), "symbolic")
    assert [op_view(n).attrs for n in functional.graph.nodes if op_view(n).kind == "adaptive_avg_pool1d"] == [
        {"output_size": 3}]


class FunctionalPool1d(nn.Module):
    def forward(self, x):
        return F.adaptive_avg_pool1d(x, 3)


class Powers(nn.Module):
    """T5's RMS norm squares, GPT-2's tanh GELU cubes; a tensor exponent has no number to constrain."""

    def forward(self, x):
        return x.pow(2) + x ** 3 + torch.pow(x, x)


def test_powers_in_every_form_carry_their_exponent():
    x = torch.rand(2, 3)
    for gm in (symbolic(Powers(), x), exported(Powers(), x)):
        views = [v for v in compute_views(gm) if v.kind == "pow"]
        assert [v.attrs["exponent"] for v in views] == [2.0, 3.0, None]
