"""Regions: illegal nodes grouped into connected, cycle-free groups, listed by the lowering report."""

from __future__ import annotations

import json

import torch
from torch import nn

from conftest import chip, symbolic
from fxrewrite import lower
from fxrewrite.distill import carve, find_regions

CONV_ONLY = chip("[ops.conv2d]\n[ops.relu]\n")


class TwoIslands(nn.Module):
    """gelu -> sigmoid (one region), a legal conv and relu, then tanh (another region)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return torch.tanh(torch.relu(self.conv(torch.sigmoid(nn.functional.gelu(x)))))


class WouldBeCycle(nn.Module):
    """gelu feeds a legal conv (which a legal relu also reads) and an illegal add that also reads the
    conv: one region holding gelu and add would both feed and read the conv, a cycle once fused."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        g = nn.functional.gelu(x)
        c = self.conv(g)
        return g + c, torch.relu(c)


def test_connected_illegal_nodes_form_one_region_cut_at_legal_tensors():
    gm = symbolic(TwoIslands(), torch.randn(1, 3, 8, 8))
    regions = find_regions(gm, CONV_ONLY)
    assert [sorted(r.kinds) for r in regions] == [["gelu", "sigmoid"], ["tanh"]]
    assert [n.name for n in regions[0].inputs] == ["x"] and [n.name for n in regions[0].outputs] == ["sigmoid"]


class MlpBlock(nn.Module):
    """A transformer MLP: layer norm, linear, GELU, linear, then a legal conv reads it."""

    def __init__(self):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(8), nn.Linear(8, 32), nn.Linear(32, 8)

    def forward(self, x):
        return torch.relu(self.down(nn.functional.gelu(self.up(self.norm(x)))))


def test_a_legal_node_enclosed_by_illegal_ones_joins_their_region():
    gm = symbolic(MlpBlock(), torch.randn(2, 5, 8))
    regions = find_regions(gm, chip("[ops.linear]\n[ops.relu]\n"))
    # up sits between layer norm and GELU, so the three are one region; down feeds the legal relu
    assert [sorted(r.kinds.elements()) for r in regions] == [["gelu", "layer_norm", "linear"]]
    assert [n.name for n in regions[0].outputs] == ["gelu"]


def test_regions_never_create_a_cycle():
    gm = symbolic(WouldBeCycle(), torch.randn(1, 3, 8, 8))
    assert [sorted(r.kinds) for r in find_regions(gm, CONV_ONLY)] == [["gelu"], ["add"]]


def test_carving_fuses_each_region_into_a_submodule_that_computes_the_same():
    x = torch.randn(2, 3, 8, 8)
    model = TwoIslands().eval()
    carved = carve(symbolic(model, x), CONV_ONLY)
    assert [name for name, _ in carved.named_children() if name.startswith("region_")] == ["region_0", "region_1"]
    torch.testing.assert_close(carved(x), model(x))


def test_the_lowering_lists_regions_in_text_and_json():
    x = torch.randn(1, 3, 8, 8)
    report = lower(symbolic(TwoIslands(), x), (x,), target=CONV_ONLY, name="islands").report
    assert "2 regions to distil" in report.to_text()
    assert "region 0: 2 nodes (gelu 1, sigmoid 1); 1x3x8x8 -> 1x3x8x8" in report.to_text()
    document = json.loads(report.to_json())
    assert [r["kinds"] for r in document["regions"]] == [{"gelu": 1, "sigmoid": 1}, {"tanh": 1}]
