import pytest
import torch
from torch import nn

from conftest import chip
from fxrewrite import lower
from fxrewrite.ir import op_view
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass
from test_fold_batch_norm import randomized_bn


class AddThenNorm(nn.Module):
    """bn(x + y): no conv to fold into (DenseNet's and pre-activation blocks' case)."""

    def __init__(self, functional: bool):
        super().__init__()
        self.bn, self.functional = randomized_bn(5), functional

    def forward(self, x):
        y = x + 1.5
        if self.functional:
            bn = self.bn
            return nn.functional.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.1, bn.eps)
        return self.bn(y)


@pytest.mark.parametrize("form", FORMS)
def test_a_batch_norm_after_no_conv_is_a_depthwise_1x1_conv(form):
    torch.manual_seed(0)
    model = AddThenNorm(form == "functional").eval()
    x = torch.randn(2, 5, 9, 11)
    gm, rewrites = run_pass("batch-norm-as-conv", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm) == {"add": 1, "conv2d": 1}
    conv = next(m for m in gm.modules() if isinstance(m, nn.Conv2d))
    assert (conv.kernel_size, conv.groups, conv.padding) == ((1, 1), 5, (0, 0))
    assert_same(gm, model, x)


DENSE_3X3_ONLY = chip("[ops.conv2d]\nkernels = [\"3x3\"]\ngroupings = [\"dense\"]\n[ops.relu]\n")


@pytest.mark.parametrize("target, expected", [("npu-generic", ((1, 1), "depthwise")),
                                              (DENSE_3X3_ONLY, ((3, 3), "dense"))])
def test_the_lowering_takes_the_conv_to_the_form_the_target_runs(target, expected):
    """npu-generic runs the depthwise 1x1 itself; a chip with dense 3x3 convs only gets the
    zero-bordered dense diagonal conv, through the pipeline's trial legalization."""
    torch.manual_seed(0)
    model = nn.Sequential(randomized_bn(5), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1)).eval()
    x = torch.randn(1, 5, 9, 11)
    lowered = lower(captured(model, x, "module"), (x,), target=target)
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    first_conv = next(op_view(n) for n in lowered.gm.graph.nodes if op_view(n).kind == "conv2d")
    assert (first_conv.attrs["kernel"], first_conv.attrs["grouping"]) == expected


def test_a_batch_norm_after_a_conv_is_left_to_fold_batch_norm():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), randomized_bn(5)).eval()
    x = torch.randn(1, 3, 9, 11)
    gm, rewrites = run_pass("batch-norm-as-conv", captured(model, x, "module"), x)
    assert rewrites == 0 and kinds(gm)["batch_norm"] == 1
