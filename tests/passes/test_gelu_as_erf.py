import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.passes.approx_gelu_as_tanh import MAX_ERROR
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class FunctionalGelu(nn.Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)


def gelu_in(form: str, approximate: str = "none") -> nn.Module:
    return (FunctionalGelu(approximate) if form == "functional" else nn.Sequential(nn.GELU(approximate))).eval()


@pytest.mark.parametrize("form", FORMS)
def test_exact_gelu_as_erf(form):
    x = torch.linspace(-9, 9, 2 * 3 * 11 * 13).reshape(2, 3, 11, 13)
    gm, rewrites = run_pass("gelu-as-erf", captured(gelu_in(form), x, form), x)
    assert rewrites == 1 and kinds(gm) == {"mul": 3, "add": 1, "erf": 1}
    assert_same(gm, gelu_in(form), x)


def test_the_tanh_gelu_is_not_rewritten_by_the_exact_pass():
    x = torch.randn(2, 5)
    gm, rewrites = run_pass("gelu-as-erf", captured(gelu_in("module", "tanh"), x, "module"), x)
    assert rewrites == 0 and kinds(gm) == {"gelu": 1}


@pytest.mark.parametrize("form", FORMS)
def test_the_approximate_tanh_form_stays_within_its_stated_error(form):
    x = torch.linspace(-9, 9, 2 * 3 * 11 * 13, dtype=torch.float64).reshape(2, 3, 11, 13)
    gm, rewrites = run_pass("approx-gelu-as-tanh", captured(gelu_in(form), x.float(), form), x.float())
    assert rewrites == 1 and kinds(gm) == {"mul": 6, "add": 2, "tanh": 1}
    error = (gm(x.float()).double() - F.gelu(x)).abs().max().item()
    assert 1e-5 < error <= MAX_ERROR + 1e-6, "an approximation: visibly off, but never by more than it says"
    assert 1e-4 < MAX_ERROR < 1e-2
