"""Students sized by cost: the widest, deepest candidate within the budget, a layer dropped before
width; exact rewrites dearer than students go to distillation when there is calibration data."""

from __future__ import annotations

import math

import torch
from torch import nn

from conftest import symbolic
from fxrewrite.distill import synthesize
from fxrewrite.cost import Cost
from fxrewrite.distill.sizing import FLOOR_SHARE, GROWTH_CAP, allowance, module_cost, spare, widths
from fxrewrite.distill.students.conv import ConvStudent
from fxrewrite.examples import tiny_convnext
from fxrewrite.lowering.exact import lower_exact
from fxrewrite.target import Target

ARCHNET = Target.load("archnet")
X = torch.randn(2, 16, 9, 9)


def cost_of(student: nn.Module) -> Cost:
    return module_cost(student, (X,), ARCHNET)


def test_widths_run_from_the_full_width_down_to_a_quarter_and_at_least_four():
    assert widths(16) == [16, 12, 8, 6, 4]
    assert widths(6) == [6, 4] and widths(3) == [3]  # never below MIN_WIDTH unless the full width is


def test_the_estimate_folds_batch_norm_as_deployment_does():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    assert cost_of(nn.Sequential(conv, nn.BatchNorm2d(16))) == cost_of(conv)


def test_a_larger_budget_buys_a_larger_student_and_the_ratio_is_reported():
    teacher = cost_of(ConvStudent({0: 16}, {0: ()}, 16, 16, 1, (), None))
    output = torch.randn(2, 16, 9, 9)
    roomy = synthesize("r", [X], [output], teacher, ARCHNET, Cost(10 * teacher.cycles, 10 * teacher.macs))
    # archnet's 500 cycles per op make MACs the binding limit at this size
    tight = synthesize("r", [X], [output], teacher, ARCHNET, Cost(10 * teacher.cycles, teacher.macs // 2))
    assert roomy.size == "2 x conv3x3 of 16" and roomy.cost_ratio > 1
    assert tight.size == "1 x conv3x3 of 8" and cost_of(tight.student).macs <= teacher.macs // 2
    starved = synthesize("r", [X], [output], teacher, ARCHNET, Cost(1.0, 1))
    assert starved.size == "1 x conv3x3 of 4" and starved.cost_ratio > 0.1  # the smallest, over its budget


def test_a_layer_is_dropped_before_any_width():
    teacher = cost_of(ConvStudent({0: 16}, {0: ()}, 16, 16, 1, (), None))
    chosen = synthesize("r", [X], [torch.randn(2, 16, 9, 9)], teacher, ARCHNET,
                        Cost(1.01 * teacher.cycles, int(1.01 * teacher.macs)))
    assert chosen.size == "1 x conv3x3 of 16"


def test_a_skip_student_starts_as_input_plus_a_fresh_conv_of_the_body():
    torch.manual_seed(0)
    student = ConvStudent({0: 16}, {0: ()}, 16, 8, 1, (), skip_input=0).eval()
    with torch.no_grad():
        student.last.weight[:, 16:].zero_()
        student.last.bias.zero_()
        torch.testing.assert_close(student(X), X)


def test_a_cheap_region_may_spend_a_floor_share_of_the_model():
    region, model = Cost(10.0, 100), Cost(1e6, 10**7)
    assert allowance(region, model, 1.5) == Cost(FLOOR_SHARE * 1e6, int(FLOOR_SHARE * 10**7))
    assert allowance(Cost(1e6, 10**7), model, 1.5) == Cost(1.5e6, 15 * 10**6)


def test_with_calibration_data_a_material_exact_rewrite_dearer_than_a_student_is_distilled():
    x = torch.zeros(1, 1, 28, 28)
    exact = lower_exact(symbolic(tiny_convnext(), x), ARCHNET, (x,))
    planned = lower_exact(symbolic(tiny_convnext(), x), ARCHNET, (x,), student_budget=1.5)
    residual_adds = {"add", "add_1", "add_2", "add_3"}
    assert not residual_adds & exact.kept.keys() and exact.passes and any(
        r.name == "add-as-concat-conv" and r.rewrites == 4 for r in exact.passes)
    assert residual_adds <= planned.kept.keys()
    assert all("distilled instead" in planned.kept[name] and "--student-budget 1.5" in planned.kept[name]
               and ", a student of at most " in planned.kept[name] for name in residual_adds)
    assert planned.after.macs < exact.after.macs


def test_the_spare_is_the_networks_cycle_budget_less_the_model_with_its_students_in_place():
    model, regions = Cost(1000.0, 10_000), [Cost(300.0, 4_000), Cost(200.0, 1_000)]
    assert spare(model, regions, [Cost(100.0, 9_000), Cost(100.0, 1_000)], 1.0) == 300.0
    assert spare(model, regions, [Cost(600.0, 5_000), Cost(0.0, 0)], 1.2) == 100.0


def test_a_student_grows_past_its_growth_cap_only_into_the_cycles_the_network_has_spare():
    teacher = cost_of(ConvStudent({0: 16}, {0: ()}, 16, 16, 1, (), None))
    allowed = Cost(10 * teacher.cycles, teacher.macs // 8)
    small = synthesize("r", [X], [torch.randn(2, 16, 9, 9)], teacher, ARCHNET, allowed)
    assert small.size == "1 x conv3x3 of 4" and small.cost == cost_of(small.student)
    # the next step up costs more than GROWTH_CAP x the allowance: no step without spare
    step = small.larger(math.inf)
    assert step.size == "2 x conv3x3 of 4" and not step.cost.within(allowed.scaled(GROWTH_CAP))
    assert small.larger(0.0) is None
    added = step.cost.cycles - small.cost.cycles
    assert small.larger(added).size == "2 x conv3x3 of 4"
    assert small.larger(added - 1) is None  # one cycle short
