"""silu-as-sigmoid-mul, hardswish-as-hardsigmoid-mul, hardsigmoid-as-relu6: activations rebuilt from
what a target declares, in module, functional and ATen forms, on odd sizes, borders included."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import chip
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass

CASES = {  # pass -> (module, function, the kinds it leaves)
    "silu-as-sigmoid-mul": (nn.SiLU, F.silu, {"sigmoid": 1, "mul": 1}),
    "hardswish-as-hardsigmoid-mul": (nn.Hardswish, F.hardswish, {"hardsigmoid": 1, "mul": 1}),
}


class Apply(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def model_in(form: str, module: type[nn.Module], function) -> nn.Module:
    return Apply(function) if form == "functional" else nn.Sequential(module())


def wide_input(*shape: int) -> torch.Tensor:
    """Values across every piece of the activations' definitions: below -3, between, above 3."""
    return torch.linspace(-8, 8, steps=torch.Size(shape).numel()).reshape(shape)[..., torch.randperm(shape[-1])]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", list(CASES))
def test_activation_as_primitives(name, form):
    module, function, left = CASES[name]
    model, x = model_in(form, module, function).eval(), wide_input(2, 3, 9, 11)
    gm, rewrites = run_pass(name, captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm) == left
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", FORMS)
def test_hardsigmoid_with_scalar_ops_where_the_target_has_them(form):
    model, x = model_in(form, nn.Hardsigmoid, F.hardsigmoid).eval(), wide_input(2, 3, 9, 11)
    scalar_chip = chip("[ops.add]\noperands = [\"scalar\"]\n[ops.mul]\noperands = [\"scalar\"]\n[ops.relu6]\n")
    gm, rewrites = run_pass("hardsigmoid-as-relu6", captured(model, x, form), x, scalar_chip)
    assert rewrites == 1 and kinds(gm) == {"add": 1, "relu6": 1, "mul": 1}
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", FORMS)
def test_hardsigmoid_with_depthwise_convs_where_the_target_lacks_scalar_ops(form):
    model, x = model_in(form, nn.Hardsigmoid, F.hardsigmoid).eval(), wide_input(2, 3, 9, 11)
    conv_chip = chip("[ops.conv2d]\nkernels = [\"1x1\"]\n[ops.relu6]\n")
    gm, rewrites = run_pass("hardsigmoid-as-relu6", captured(model, x, form), x, conv_chip)
    assert rewrites == 1 and kinds(gm) == {"conv2d": 2, "relu6": 1}
    assert_same(gm, model, x)


def test_hardsigmoid_of_tokens_on_a_chip_with_convs_only_stays():
    model, x = nn.Sequential(nn.Hardsigmoid()).eval(), wide_input(2, 5, 7)
    conv_chip = chip("[ops.conv2d]\n[ops.relu6]\n")
    gm, rewrites = run_pass("hardsigmoid-as-relu6", captured(model, x, "module"), x, conv_chip)
    assert rewrites == 0 and kinds(gm) == {"hardsigmoid": 1}


def test_hardsigmoid_of_vectors_as_fc_layers_where_the_target_lacks_scalar_ops():
    model, x = nn.Sequential(nn.Hardsigmoid()).eval(), wide_input(3, 10)
    fc_chip = chip("[ops.linear]\n[ops.relu6]\n")
    gm, rewrites = run_pass("hardsigmoid-as-relu6", captured(model, x, "module"), x, fc_chip)
    assert rewrites == 1 and kinds(gm) == {"linear": 2, "relu6": 1}
    assert_same(gm, model, x)
