"""The host CPU's estimate: what an op left off the NPU costs, and how lowering weighs it."""

import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.frontend import capture
from fxrewrite.ir import op_view
from fxrewrite.lowering.growth_limit import GrowthLimit, charges, runs_on_host
from fxrewrite.target import Target
from fxrewrite.target.host_cpu import HostOp, host_cycles, host_node_cycles, host_op_cycles


class Resize(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=4, mode="bilinear")


def test_an_op_costs_its_kernel_per_element_and_its_transfers():
    small, large = HostOp("where", 10, 10, 90), HostOp("where", 1000, 1000, 9000)
    assert 0 < host_op_cycles(small) < host_op_cycles(large)
    assert host_op_cycles(HostOp("upsample_bilinear2d", 100, 1600, 0)) > host_op_cycles(HostOp("where", 100, 1600, 0))
    assert host_cycles([small, large]) == round(host_op_cycles(small) + host_op_cycles(large))


def test_a_node_on_the_host_pays_its_int8_conversions():
    gm = capture(Resize().eval(), (torch.randn(1, 4, 6, 6),), "symbolic")
    resize = next(v for v in map(op_view, gm.graph.nodes) if v.kind == "upsample")
    kernel = host_op_cycles(HostOp("upsample_bilinear2d", 4 * 36, 4 * 576, 4 * (4 * 36 + 4 * 576)))
    assert host_node_cycles(resize) > kernel


def test_illegal_nodes_cost_the_host_cpu_on_an_ethos_u_and_the_npu_elsewhere():
    gm = capture(Resize().eval(), (torch.randn(1, 4, 6, 6),), "symbolic")
    u55, generic = Target.load("ethos-u55-128"), Target.load("npu-generic")
    resize = next(n for n in gm.graph.nodes if op_view(n).kind == "upsample")
    assert not u55.verdict(resize).legal and u55.performance.host_cpu == "cortex-m55"
    assert charges(gm, u55)[resize.name].cycles == host_node_cycles(op_view(resize))
    assert runs_on_host(resize, u55) and GrowthLimit.of(gm, u55, 2.0).on_host == {resize.name}
    assert generic.performance.host_cpu == "" and GrowthLimit.of(gm, generic, 2.0).on_host == frozenset()
