import pytest
import torch
from torch import nn

from pass_helpers import FORMS, FunctionalConv, assert_same, captured, conv_kernels, run_pass


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stride, padding, groups", [(1, 0, 1), (2, 0, 1), (2, 1, 1), (1, 0, 3)])
def test_1x1_becomes_zero_bordered_3x3(form, stride, padding, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 9, 1, stride=stride, padding=padding, groups=groups, bias=True)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(2, 6, 29, 31)
    gm, rewrites = run_pass("conv1x1-as-3x3", captured(model, x, form), x)
    assert rewrites == 1
    assert conv_kernels(gm) == [(3, 3)]
    assert_same(gm, model, x)
