import pytest
import torch
from torch import nn

from fxrewrite.ir import op_view

from pass_helpers import FORMS, FunctionalConv, assert_same, captured, run_pass


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("groups, stride", [(3, 1), (6, 2)])
def test_grouped_and_depthwise_become_block_diagonal_dense(form, groups, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 12, 3, stride=stride, padding=1, groups=groups)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 6, 29, 31)
    gm, rewrites = run_pass("grouped-conv-as-dense", captured(model, x, form), x)
    assert rewrites == 1
    assert [v.attrs["groups"] for v in map(op_view, gm.graph.nodes) if v.kind == "conv2d"] == [1]
    assert_same(gm, model, x)


def test_a_dense_weight_over_budget_is_declined(monkeypatch):
    from fxrewrite.passes import grouped_conv_as_dense

    monkeypatch.setattr(grouped_conv_as_dense, "MAX_DENSE_WEIGHT_ELEMENTS", 100)
    model = nn.Sequential(nn.Conv2d(6, 6, 3, groups=6))
    x = torch.randn(1, 6, 9, 9)
    gm, rewrites = run_pass("grouped-conv-as-dense", captured(model, x, "module"), x)
    assert rewrites == 0
    assert [v.attrs["groups"] for v in map(op_view, gm.graph.nodes) if v.kind == "conv2d"] == [6]
