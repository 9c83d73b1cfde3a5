"""Lowering speed. Run: .venv/bin/python -m pytest benchmarks -q --benchmark-columns=min,mean,rounds

Each group has its reference in the same run: the synthetic chains print time per node so linear
growth is visible, and the rewrite engine is compared with torch.fx's subgraph_rewriter.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import fx, nn
from torch.fx import subgraph_rewriter

from fxrewrite.frontend import capture
from fxrewrite import lower
from fxrewrite.rewrite import Rule, RuleSet, apply_rules, op
from fxrewrite.target import Target

#: the 16 models of ../shared/zoo_report.py
MODELS = ["resnet18", "resnet50", "convnext_tiny", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16",
          "swin_t", "regnet_y_400mf", "densenet121", "shufflenet_v2_x1_0", "squeezenet1_1", "mnasnet0_5", "googlenet",
          "efficientnet_v2_s", "maxvit_t"]


@pytest.mark.parametrize("name", MODELS)
def test_lower_torchvision(benchmark, name):
    benchmark.group = "lower torchvision model to npu-generic (capture excluded)"
    x = torch.randn(1, 3, 224, 224)
    captured = capture(getattr(torchvision.models, name)().eval(), (x,))
    target = Target.load("npu-generic")
    benchmark.pedantic(lambda gm: lower(gm, (x,), target=target), setup=lambda: ((copy.deepcopy(captured),), {}),
                       rounds=1, iterations=1)


class Chain(nn.Module):
    """conv -> bn -> relu -> dropout, repeated: every block has a fold and a no-op to remove."""

    def __init__(self, blocks: int):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                                                    nn.Dropout(0.1)) for _ in range(blocks)])

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("nodes", [1_000, 10_000, 100_000])
def test_pipeline_scaling(benchmark, nodes):
    benchmark.group = "exact pipeline on synthetic chains (time per node in extra_info)"
    x = torch.randn(1, 2, 4, 4)
    captured = capture(Chain(nodes // 4).eval(), (x,))
    target = Target.load("npu-generic")
    result = benchmark.pedantic(lambda gm: lower(gm, (x,), target=target), setup=lambda: ((copy.deepcopy(captured),), {}),
                                rounds=1, iterations=1)
    assert not result.verdicts.illegal
    benchmark.extra_info["us_per_node"] = round(benchmark.stats.stats.min / len(captured.graph.nodes) * 1e6, 2)


class Relus(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        for _ in range(self.n):
            x = torch.relu(torch.neg(x))
        return x


def _neg_relu(x):
    return torch.relu(torch.neg(x))


def _replacement(x):
    return torch.relu(-x)


def _engine_rule() -> RuleSet:
    def replace(match, rewriter):
        return rewriter.function(match["relu"].node, torch.relu, rewriter.function(
            match["relu"].node, torch.mul, match["neg"].inputs[0], -1.0))

    return RuleSet((Rule("neg-relu", op("relu", op("unknown", name="neg", where={"torch.neg": lambda v: v.attrs["target"].endswith("neg")}),
                                        name="relu"), replace),))


@pytest.mark.parametrize("engine", ["fxrewrite", "subgraph_rewriter"])
def test_same_rewrite_two_engines(benchmark, engine):
    benchmark.group = "relu(neg(x)) -> relu(x * -1) on 2,000 matches"
    x = torch.randn(4, 4)
    captured = capture(Relus(2_000), (x,))

    def run(gm: fx.GraphModule):
        if engine == "fxrewrite":
            return apply_rules(gm, _engine_rule()).total
        return len(subgraph_rewriter.replace_pattern(gm, _neg_relu, _replacement))

    count = benchmark.pedantic(run, setup=lambda: ((copy.deepcopy(captured),), {}), rounds=3, iterations=1)
    assert count == 2_000
