import pytest
import torch
from torch import nn

from pass_helpers import (LARGE_KERNEL_CASES, FunctionalConv, assert_same, captured, conv_kernels, large_kernel_case,
                          run_pass)


@LARGE_KERNEL_CASES
def test_large_kernel_as_exact_3x3_stack(k, stride, padding, depthwise):
    model, x = large_kernel_case(k, stride, padding, depthwise)
    gm, rewrites = run_pass("decompose-large-kernel", captured(model, x, "module"), x)
    assert rewrites == 1
    assert conv_kernels(gm) == [(3, 3)] * (k // 2)
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", ["functional", "aten"])
def test_other_forms_and_rectangular_kernels(form):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, (7, 5), stride=2, padding=(3, 1), bias=True)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 3, 29, 31)
    gm, rewrites = run_pass("decompose-large-kernel", captured(model, x, form), x)
    assert rewrites == 1 and set(conv_kernels(gm)) == {(3, 3)}
    assert_same(gm, model, x)


def test_even_kernels_are_declined_with_a_reason():
    x = torch.randn(1, 3, 16, 16)
    model = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4))
    gm = captured(model, x, "module")
    from fxrewrite.passes import registered_passes
    from fxrewrite.rewrite import PassContext

    result = registered_passes()["decompose-large-kernel"].run(gm, PassContext((x,)))
    assert result.rewrites == 0
    assert result.stats.declined["shift-first"] == ["_0: even kernel 4x4: only odd kernels decompose into 3x3 stacks"]
    assert result.stats.declined["partial-sums"] == ["_0: even kernel 4x4: only odd kernels split into 3x3 windows"]
