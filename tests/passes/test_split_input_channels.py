import pytest
import torch
from torch import nn

from conftest import chip
from pass_helpers import assert_same, captured, kinds, run_pass
from fxrewrite.ir import op_view
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import PassContext

CHIP = chip("[ops.conv2d]\nin_channels_max = 8\n[ops.cat]\ndims = [1]\n")


class ConcatConv(nn.Module):
    def __init__(self, widths, out_ch, kernel, stride):
        super().__init__()
        self.widths = widths
        self.conv = nn.Conv2d(sum(widths), out_ch, kernel, stride=stride, padding=kernel // 2, bias=True)

    def forward(self, x):
        parts = [x[:, :w] * (i + 1) for i, w in enumerate(self.widths)]
        return self.conv(torch.cat(parts, 1))


@pytest.mark.parametrize("form", ["module", "aten"])
@pytest.mark.parametrize("widths, out_ch, kernel, stride", [
    ((8, 8), 8, 3, 1), ((8, 8), 5, 1, 2), ((3, 4, 5, 6), 7, 3, 2), ((2, 2, 2, 2, 2), 12, 3, 1)])
def test_conv_over_too_many_channels_as_partial_convs_summed_by_a_conv(form, widths, out_ch, kernel, stride):
    torch.manual_seed(sum(widths))
    model = ConcatConv(widths, out_ch, kernel, stride).eval()
    x = torch.randn(2, max(widths), 29, 31)
    gm, rewrites = run_pass("split-input-channels", captured(model, x, form), x, CHIP)
    assert rewrites == 1
    convs = [op_view(n) for n in gm.graph.nodes if op_view(n).kind == "conv2d"]
    assert max(c.attrs["in_ch"] for c in convs) <= 8
    assert_same(gm, model, x)


def test_input_that_is_not_a_concat_is_declined_with_a_reason():
    model = nn.Sequential(nn.Conv2d(12, 4, 3)).eval()
    x = torch.randn(1, 12, 9, 9)
    gm = captured(model, x, "module")
    result = registered_passes()["split-input-channels"].run(gm, PassContext((x,), CHIP, debug=True))
    assert result.rewrites == 0 and kinds(gm)["conv2d"] == 1
    assert any("cat" in reason for reason in result.stats.misses["split-at-cat"])
