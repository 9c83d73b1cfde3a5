"""Regions: illegal nodes grouped into connected, cycle-free groups, listed by the lowering report."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import chip, exported, symbolic
from fxrewrite import lower
from fxrewrite.distill import carve, find_regions
from fxrewrite.distill.regions.sharing import data_free
from fxrewrite.ir import tensor_shape
from fxrewrite.target import Target

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
    regions = find_regions(gm, chip("[ops.linear]\n[ops.relu]\n[ops.reshape]\n"))
    # up sits between layer norm and GELU, so the three are one region; down feeds the legal relu
    assert [sorted(r.kinds.elements()) for r in regions] == [["gelu", "layer_norm", "linear"]]
    assert [n.name for n in regions[0].outputs] == ["gelu"]


class TokenHead(nn.Module):
    """Two token blocks (residual adds) and a mean-pooled linear head."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(MlpBlock() for _ in range(2))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(1))


def test_a_token_stream_is_cut_only_where_the_target_can_reshape():
    gm = symbolic(TokenHead(), torch.randn(2, 5, 8))
    with_reshape = find_regions(gm, chip("[ops.linear]\n[ops.relu]\n[ops.reshape]\n"))
    without = find_regions(gm, chip("[ops.linear]\n[ops.relu]\n"))
    # a student can make tokens only with a reshape: without one the stream runs on to the pooled vector
    assert [len(tensor_shape(r.outputs[0])) for r in with_reshape] == [3, 3, 2]
    assert [[len(tensor_shape(o)) for o in r.outputs] for r in without] == [[2]]


class PositionedTokens(TokenHead):
    """TokenHead after a position table added outside its blocks, as ViT adds its embedding."""

    def __init__(self):
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, 5, 8))

    def forward(self, x):
        return super().forward(x * 2 + self.position)


@pytest.mark.parametrize("capture_with", [symbolic, exported])
def test_a_token_stream_runs_on_through_block_weights_where_the_target_cannot_reshape(capture_with):
    """ViT on archnet was cut after its position add: in ATen form a block's weights are graph nodes,
    and reading one counted as entering a new piece, so a region ended at tokens no student makes."""
    regions = find_regions(capture_with(PositionedTokens(), torch.randn(2, 5, 8)), chip("[ops.linear]\n[ops.relu]\n"))
    assert [[len(tensor_shape(o)) for o in r.outputs] for r in regions] == [[2]]
    assert "tokens, which" in regions[0].joined_by


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


class ResidualChain(nn.Module):
    """Two residual blocks x + gelu(conv(x)) whose adds and GELUs the target cannot run, then a tanh:
    without the cut after each add, all of it would be one region from input to output."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        x = nn.functional.gelu(x)
        x = x + nn.functional.gelu(self.first(x))
        x = x + nn.functional.gelu(self.second(x)) * self.scale
        return torch.tanh(x)


def test_a_residual_chain_is_cut_into_one_region_per_block():
    x = torch.randn(1, 4, 9, 9)
    gm = symbolic(ResidualChain(), x)
    regions = find_regions(gm, CONV_ONLY)
    assert [sorted(r.kinds.items()) for r in regions] == [
        [("add", 1), ("conv2d", 1), ("gelu", 2)], [("add", 1), ("conv2d", 1), ("gelu", 1), ("mul", 1)], [("tanh", 1)]]
    assert [[n.name for n in r.outputs] for r in regions] == [["add"], ["add_1"], ["tanh"]]
    # the parameter travels with the block that reads it, and the carved graph still computes the same
    assert "scale" in [n.name for n in regions[1].nodes]
    carved = carve(copy.deepcopy(gm), CONV_ONLY)
    assert [name for name, _ in carved.named_children() if name.startswith("region_")] == [
        "region_0", "region_1", "region_2"]
    torch.testing.assert_close(carved(x), gm(x))


class RandomDag(nn.Module):
    """Node i applies gelu (illegal on CONV_ONLY) or relu (legal) to the sum of earlier nodes `reads[i]`
    (an add, illegal, when there are two): many paths leave a group of illegal nodes and come back."""

    def __init__(self, steps: list[tuple[bool, tuple[int, ...]]]):
        super().__init__()
        self.steps = steps

    def forward(self, x):
        values = [x]
        for illegal, reads in self.steps:
            total = values[reads[0]] if len(reads) == 1 else values[reads[0]] + values[reads[1]]
            values.append(nn.functional.gelu(total) if illegal else torch.relu(total))
        return values[-1]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_carved_regions_never_hold_a_cycle_in_random_graphs(data):
    count = data.draw(st.integers(2, 14))
    steps = [(data.draw(st.booleans()),
              tuple(sorted(data.draw(st.lists(st.integers(0, i), min_size=1, max_size=2, unique=True)))))
             for i in range(count)]
    x = torch.randn(1, 2, 3, 3)
    model = RandomDag(steps).eval()
    gm = symbolic(model, x)
    regions = find_regions(gm, CONV_ONLY)
    rejected = {n for n in gm.graph.nodes if not CONV_ONLY.verdict(n).legal}
    assert rejected <= {n for r in regions for n in r.nodes}
    carved = carve(gm, CONV_ONLY)
    carved.graph.lint()  # a fused region that feeds and reads one node fails the topological check
    torch.testing.assert_close(carved(x), model(x))


class ShuffleUnit(nn.Module):
    """ShuffleNet's channel shuffle, then a chunk whose halves go separate ways."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        n, c, h, w = x.shape
        x = x.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        left, right = x.chunk(2, dim=1)
        return torch.cat([left, torch.relu(self.conv(right))], 1)


class WideExpansion(nn.Module):
    """A legal 3x3 conv widening to 600 channels, read by a depthwise conv archnet lacks."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(8, 600, 3, padding=1)
        self.depthwise = nn.Conv2d(600, 600, 3, padding=1, groups=600)

    def forward(self, x):
        return self.depthwise(torch.relu(self.expand(x)))


def test_regions_end_at_tensors_a_student_can_read_and_make():
    """Regressions from the zoo at 64x64 on archnet: shufflenet's region ended at a chunk's tuple
    (a crash while distilling), and mnasnet's students read 576 channels where archnet's convs read 512."""
    archnet = Target.load("archnet")
    shuffle = find_regions(symbolic(ShuffleUnit(), torch.randn(1, 8, 6, 6)), archnet)
    assert all(tensor_shape(n) is not None for r in shuffle for n in (*r.inputs, *r.outputs))
    wide = find_regions(symbolic(WideExpansion(), torch.randn(1, 8, 6, 6)), archnet)
    assert [tensor_shape(n)[1] for r in wide for n in r.inputs] == [8]


class WideBottleneck(nn.Module):
    """resnet50's bottleneck on a chip whose convs read at most 8 channels and that cannot add: a
    16-channel map read by the block's first conv (rejected: 16 inputs) and by its add (rejected),
    with legal layers between them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 16, 3, padding=1)
        self.reduce, self.middle, self.expand = nn.Conv2d(16, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), \
            nn.Conv2d(4, 16, 3, padding=1)

    def forward(self, x):
        wide = torch.relu(self.stem(x))
        branch = self.expand(torch.relu(self.middle(torch.relu(self.reduce(wide)))))
        return torch.relu(wide + branch).mean((2, 3))


def test_a_map_wider_than_the_convs_read_never_crosses_from_one_region_to_the_next():
    """The path leaving the block's first conv and coming back at its add had cut the block in two,
    with the wide map crossing between them (resnet50 on archnet, regression): the block is one region."""
    narrow = chip("""
        [ops.conv2d]
        kernels = ["3x3"]
        in_channels_max = 8
        [ops.relu]
        [ops.mean]
    """)
    regions = find_regions(symbolic(WideBottleneck(), torch.randn(1, 4, 6, 6)), narrow)
    assert [tensor_shape(n)[1] for r in regions for n in r.inputs] == [4]
    assert len(regions) == 1


class SharedBatchSize(nn.Module):
    """One x.shape[0] read by two regions (gelu ... reshape, and tanh ... reshape) apart from a
    legal conv, as swin_t reads its batch size in every block."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        n = x.shape[0]
        made = self.conv(nn.functional.gelu(x).reshape(n, 3, 8, 8))
        return torch.tanh(made).reshape(n, -1), torch.relu(made)  # the relu keeps the conv out of both


def test_a_size_two_regions_read_is_computed_in_each_so_no_int_leaves_a_region():
    x = torch.randn(4, 3, 8, 8)
    model = SharedBatchSize().eval()
    carved = carve(symbolic(model, x[:1]), CONV_ONLY)
    regions = [m for name, m in carved.named_children() if name.startswith("region_")]
    assert len(regions) == 2
    for region in regions:
        output = next(n for n in region.graph.nodes if n.op == "output")
        assert all(tensor_shape(a) is not None for a in output.all_input_nodes)
    torch.testing.assert_close(carved(x), model(x))


class PositionBias(nn.Module):
    """A bias gathered from a parameter (the one op the chip lacks), reshaped and permuted by legal
    ops, added to a map by a legal add: the chain is fed by no input, so a region of it alone would
    have no input for a student to read; it grows to the add that reads the map."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(9, 3))
        self.register_buffer("index", torch.arange(64) % 9)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        bias = self.table[self.index].reshape(8, 8, 3).permute(2, 0, 1).unsqueeze(0)
        return torch.relu(self.conv(x + bias))


@pytest.mark.parametrize("capture_with", [symbolic, exported])
def test_a_chain_made_from_parameters_alone_joins_the_region_that_reads_it(capture_with):
    x = torch.randn(4, 3, 8, 8)
    model = PositionBias().eval()
    gm = capture_with(model, x[:1])
    no_gather = chip("[ops.conv2d]\n[ops.relu]\n[ops.add]\n[ops.reshape]\n[ops.permute]\n")
    regions = find_regions(gm, no_gather)
    assert len(regions) == 1 and [tensor_shape(n) for n in regions[0].inputs] == [(1, 3, 8, 8)]
    torch.testing.assert_close(carve(gm, no_gather)(x), model(x))


class AssertsItsRank(nn.Module):
    """gelu, then an assert on the result's rank (as torchvision's ViT encoder checks its input), then
    tanh: the rank check reads a member and feeds only the assert."""

    def forward(self, x):
        y = nn.functional.gelu(x)
        torch._assert(y.dim() == 4, "a map")
        return torch.tanh(y)


def test_a_rank_check_stays_inside_so_its_tensor_is_no_region_output():
    gm = symbolic(AssertsItsRank(), torch.randn(1, 3, 8, 8))
    regions = find_regions(gm, CONV_ONLY)
    assert len(regions) == 1 and [n.name for n in regions[0].outputs] == ["tanh"]


class SharedMask(nn.Module):
    """Two attention-like blocks the target cannot run, both reading one mask (BERT's attention mask,
    a constant once captured): each region must take its own copy, not pass it to the other."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        mask = x.new_ones(x.shape[0], 1, 6) * 0.5
        h = torch.relu(self.first(nn.functional.gelu(x) * mask))
        return torch.relu(self.second(nn.functional.gelu(h) * mask))


def test_a_mask_read_by_two_regions_is_copied_into_each():
    x = torch.randn(2, 4, 6)
    gm = exported(SharedMask(), x)  # as a .pt2 holds it: aten.new_ones reads x for its size alone
    target = chip("[ops.linear]\n[ops.relu]\n[ops.reshape]\n")
    regions = find_regions(gm, target)
    assert len(regions) == 2
    carved = carve(copy.deepcopy(gm), target)
    calls = [n for n in carved.graph.nodes if n.op == "call_module" and str(n.target).startswith("region_")]
    # each region takes the activation alone and returns one tensor: the mask crosses no boundary
    assert [len(n.args) for n in calls] == [1, 1] and all(tensor_shape(n) == (2, 4, 6) for n in calls)
    torch.testing.assert_close(carved(x), gm(x))


def test_data_freedom_is_answered_for_graphs_deeper_than_the_recursion_limit():
    # regression: a recursive answer overflowed Python's stack on convnext_tiny (exit 3 in the zoo report)
    graph = torch.fx.Graph()
    value = graph.placeholder("x")
    value.meta["tensor_meta"] = torch.fx.passes.shape_prop._extract_tensor_metadata(torch.zeros(1, 2))
    for _ in range(3 * sys.getrecursionlimit()):
        value = graph.call_function(torch.relu, (value,))
        value.meta["tensor_meta"] = value.args[0].meta["tensor_meta"]
    graph.output(value)
    assert data_free(value) is False


class ChannelsLastBlock(nn.Module):
    """swin's way: a conv stem, then channels-last (N, H, W, C) layers, back to a map for the head;
    beside it convnext's permute pair and shufflenet's channel shuffle, both of which end as maps."""

    def __init__(self):
        super().__init__()
        self.stem, self.norm, self.mix = nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm(8), nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        last = self.stem(x).permute(0, 2, 3, 1)
        last = last + self.mix(self.norm(last))
        back = self.head(last.permute(0, 3, 1, 2))
        n, c, h, w = back.shape
        return back.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def test_rank_4_tensors_that_are_no_maps_stay_inside_regions_where_the_target_cannot_permute():
    """On archnet (no permute) the channels-last tensors are members and never a region's input or
    output; the tensors after the permute back and the channel shuffle are maps (regression: swin_t
    and maxvit_t were refused at 64x64, their (N, H, W, C) and window tensors crossing regions)."""
    from fxrewrite.distill.regions.layouts import non_map_tensors

    gm = symbolic(ChannelsLastBlock(), torch.randn(1, 3, 6, 6))
    assert {n.name for n in non_map_tensors(gm)} == {"permute", "norm", "mix", "add"}
    regions = find_regions(gm, Target.load("archnet"))
    boundaries = [n for r in regions for n in (*r.inputs, *r.outputs)]
    assert boundaries and not set(boundaries) & non_map_tensors(gm)
    assert [tensor_shape(n) for r in regions for n in r.outputs] == [(1, 8, 6, 6)]
