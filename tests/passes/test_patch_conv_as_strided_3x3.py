import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import FORMS, FunctionalConv, assert_same, captured, conv_kernels, run_pass


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("k, size", [(2, (8, 10)), (2, (9, 11)), (2, (8, 11)), (4, (32, 30)), (4, (29, 31)),
                                     (8, (33, 40))])
def test_a_patch_conv_lowers_onto_3x3_stride_2_convs_exactly(form, k, size):
    """A k x k stride-k conv with bias on even, odd and mixed map sizes (the last partial patch dropped)."""
    torch.manual_seed(k)
    conv = nn.Conv2d(3, 5, k, stride=k)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 3, *size)
    lowered = lower(captured(model, x, form), (x,), target="archnet", max_growth=100)
    assert lowered.legal and set(conv_kernels(lowered.gm)) == {(3, 3)}
    assert lowered.report.rewrites["patch-conv-as-strided-3x3"] >= 1
    assert_same(lowered.gm, model, x)


def test_a_padded_or_grouped_patch_conv_is_left_to_other_passes():
    for conv in (nn.Conv2d(4, 4, 2, stride=2, padding=1), nn.Conv2d(4, 4, 2, stride=2, groups=2)):
        x = torch.randn(1, 4, 8, 8)
        gm, rewrites = run_pass("patch-conv-as-strided-3x3", captured(nn.Sequential(conv), x, "module"), x)
        assert rewrites == 0 and conv_kernels(gm) == [(2, 2)]
