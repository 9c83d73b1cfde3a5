import pytest
import torch
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class LayerScale(nn.Module):
    """ConvNeXt's layer scale: a (C, 1, 1) parameter times the map, on either side of the product."""

    def __init__(self, form: str, shape: tuple[int, ...] = (5, 1, 1)):
        super().__init__()
        self.form = form
        self.gamma = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        y = torch.relu(x)
        return torch.mul(self.gamma, y) if self.form == "functional" else y * self.gamma


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape, x_shape", [((5, 1, 1), (2, 5, 7, 9)), ((1,), (2, 5, 7, 9)), ((5,), (3, 5))])
def test_a_per_channel_or_single_scale_is_a_batch_norm_over_the_channels(form, shape, x_shape):
    torch.manual_seed(0)
    model = LayerScale("functional" if form == "functional" else "module", shape).eval()
    x = torch.randn(x_shape)
    gm, rewrites = run_pass("mul-constant-as-batch-norm", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm) == {"relu": 1, "batch_norm": 1}
    assert_same(gm, model, x, rtol=0)  # one multiply per element, as before


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape, x_shape", [((9,), (2, 5, 7, 9)), ((6,), (3, 7, 6))])
def test_a_scale_along_the_last_dim_is_a_batch_norm_between_reshapes(form, shape, x_shape):
    torch.manual_seed(0)
    model = LayerScale("functional" if form == "functional" else "module", shape).eval()
    x = torch.randn(x_shape)
    gm, rewrites = run_pass("mul-constant-as-batch-norm", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm) == {"relu": 1, "batch_norm": 1, "reshape": 2}
    assert_same(gm, model, x, rtol=0)


def test_a_scale_that_varies_along_the_batch_is_left_alone():
    model = LayerScale("module", (2, 1, 1, 1)).eval()
    x = torch.randn(2, 5, 7, 9)
    gm, rewrites = run_pass("mul-constant-as-batch-norm", captured(model, x, "module"), x)
    assert rewrites == 0 and kinds(gm)["mul"] == 1


class ScaledByNumber(nn.Module):
    """Swin's attention scale: q times a number, the number on either side."""

    def __init__(self, number_first: bool):
        super().__init__()
        self.number_first = number_first

    def forward(self, x):
        y = torch.relu(x)
        return 0.35 * y if self.number_first else torch.mul(y, 0.35)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("x_shape", [(2, 3, 7, 5), (2, 7, 6), (3, 5)])
def test_a_product_with_a_number_is_a_batch_norm(form, x_shape):
    model = ScaledByNumber(form == "module").eval()
    x = torch.randn(x_shape)
    gm, rewrites = run_pass("mul-constant-as-batch-norm", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm)["batch_norm"] == 1 and "mul" not in kinds(gm)
    assert_same(gm, model, x, rtol=0)
