import pytest
import torch
from torch import nn

from pass_helpers import FORMS, FunctionalConv, assert_same, captured, kinds, run_pass


def randomized_bn(channels: int, cls=nn.BatchNorm2d) -> nn.Module:
    bn = cls(channels)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    return bn


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stride, bias", [(1, True), (2, False)])
def test_conv_bn_folds_exactly(form, stride, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride=stride, padding=1, bias=bias)
    layer = FunctionalConv(conv) if form == "functional" else conv
    model = nn.Sequential(layer, randomized_bn(7)).eval()
    x = torch.randn(2, 5, 29, 31)
    gm = captured(model, x, form)
    assert kinds(gm)["batch_norm"] == 1
    gm, rewrites = run_pass("fold-batch-norm", gm, x)
    assert rewrites == 1
    assert kinds(gm) == {"conv2d": 1}
    assert_same(gm, model, x)


def test_linear_bn_folds_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), randomized_bn(4, nn.BatchNorm1d)).eval()
    x = torch.randn(3, 6)
    gm, rewrites = run_pass("fold-batch-norm", captured(model, x, "module"), x)
    assert rewrites == 1 and kinds(gm) == {"linear": 1}
    assert_same(gm, model, x)


def test_a_conv_with_two_users_is_not_folded():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3), randomized_bn(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    x = torch.randn(1, 3, 9, 9)
    gm, rewrites = run_pass("fold-batch-norm", captured(Branch(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["batch_norm"] == 1

