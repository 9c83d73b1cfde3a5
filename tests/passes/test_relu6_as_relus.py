import pytest
import torch
from torch import nn

from pass_helpers import assert_same, captured, kinds, run_pass


@pytest.mark.parametrize("form", ["module", "aten"])
def test_relu6_as_difference_of_relus(form):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6()).eval()
    x = torch.randn(2, 3, 29, 31) * 8  # values on both sides of 0 and 6
    gm, rewrites = run_pass("relu6-as-relus", captured(model, x, form), x)
    assert rewrites == 1
    assert set(kinds(gm)) == {"conv2d", "relu", "cat"}
    assert_same(gm, model, x)


def test_values_at_and_around_the_clamp_points():
    x = torch.tensor([-1.0, 0.0, 1e-7, 3.0, 6.0 - 1e-6, 6.0, 6.0 + 1e-6, 12.0, 100.0]).reshape(1, 9, 1, 1)
    model = nn.ReLU6()
    gm, _ = run_pass("relu6-as-relus", captured(nn.Sequential(model), x, "module"), x)
    assert torch.allclose(gm(x), model(x), rtol=0, atol=1e-5)
