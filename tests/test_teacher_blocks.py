"""Students that follow the teacher block by block: the blocks read from the module hierarchy, one
region per block, the teacher-form student (exact at initialisation, trainable), and students legal
by construction where their concat would pass the target's channel limit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import exported, symbolic
from fxrewrite.cost import Cost
from fxrewrite.distill.regions.blocks import teacher_blocks
from fxrewrite.distill.regions.carving import carve, find_regions
from fxrewrite.distill.sizing import GROWTH_CAP, module_cost
from fxrewrite.distill.synthesis import synthesize
from fxrewrite.distill.students.reparameterised import RepStudent
from fxrewrite.distill.students.teacher_form import MAX_INIT_ERROR, TeacherForm, teacher_forms
from fxrewrite.distill.students.base import runs_on
from fxrewrite.lowering.exact import legal_lowering
from fxrewrite.quant import calibrate, quantize_modules, scheme_for
from fxrewrite.metrics import relative_error
from fxrewrite.target import Target
from test_region_students import trained_loss_drop

ARCHNET = Target.load("archnet")
ROOMY = Cost(1e12, 10**12)


class Basic(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN + x, ReLU (archnet has no add)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.Sequential(Basic(8), Basic(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.layers(F.relu(self.stem(x))).mean((2, 3)))


def randomized(module: nn.Module) -> nn.Module:
    """Batch norms with statistics and affine parameters away from the identity, so folding them matters."""
    torch.manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(layer.weight, 0.5, 1.5)
            nn.init.uniform_(layer.bias, -0.2, 0.2)
    return module.eval()


def test_a_node_belongs_to_the_outermost_module_of_a_class_the_model_repeats():
    gm = symbolic(randomized(Net()), torch.randn(1, 3, 9, 9))
    blocks = {n.name: block for n, block in teacher_blocks(gm.graph).items()}
    assert blocks["stem"] is None and blocks["head"] is None  # the model's own layers
    assert blocks["layers_0_conv1"] == blocks["add"] == "layers.0"
    assert blocks["layers_1_bn2"] == "layers.1"


def test_blocks_are_read_from_exported_graphs_without_importing_their_classes():
    gm = exported(randomized(Net()), torch.randn(1, 3, 9, 9))
    found = {b for n, b in teacher_blocks(gm.graph).items() if n.op == "call_function"}
    assert {"layers.0", "layers.1"} <= found
    for node in gm.graph.nodes:
        node.meta["nn_module_stack"] = {k: (path, "evil.module.Block") for k, (path, _) in
                                        node.meta.get("nn_module_stack", {}).items()}
    # a class named by a string is never imported to ask its kind; every module is one class here
    assert set(teacher_blocks(gm.graph).values()) == {None, "stem", "layers", "head"}


def test_regions_follow_the_teachers_blocks():
    gm = symbolic(randomized(Net()), torch.randn(1, 3, 9, 9))
    regions = find_regions(gm, ARCHNET)
    assert [r.blocks for r in regions[:2]] == [("layers.0",), ("layers.1",)]
    # each region is the whole block: its convs, batch norms and ReLUs join the add archnet lacks
    assert regions[0].kinds["conv2d"] == 2 and regions[0].kinds["add"] == 1
    assert all(r.joined_by == "" for r in regions)


def test_the_teacher_form_starts_as_the_teacher_block_and_training_lowers_its_quantized_loss():
    region = carve(symbolic(randomized(Net()), torch.randn(1, 3, 7, 9)), ARCHNET).region_0
    torch.manual_seed(1)
    inputs = (torch.randn(16, 8, 7, 9),)
    form, = teacher_forms(region, inputs, ARCHNET, legal_lowering)
    assert not form.approximations and runs_on(ARCHNET, form, inputs)
    with torch.no_grad():
        want = region(*inputs)
        assert relative_error(form(*inputs), want) <= MAX_INIT_ERROR  # exact at initialisation
    quantize_modules(form, scheme_for(ARCHNET, 4, 4))
    calibrate(form, lambda: form(*inputs))
    first, last = trained_loss_drop(form, list(inputs), want, lr=1e-3)  # it starts close: small steps
    assert last < 0.7 * first


def test_a_block_whose_form_pays_for_its_skip_is_a_re_parameterised_student_within_the_budget():
    gm = carve(symbolic(randomized(Net()), torch.randn(1, 3, 7, 9)), ARCHNET)
    inputs = (torch.randn(8, 8, 7, 9),)
    output = gm.region_0(*inputs)
    region = module_cost(gm.region_0, inputs, ARCHNET)
    # the default budget (the region's own cost): the block's form costs x1.5 (the add folded into conv2 as
    # a conv over [h | x]); two plain 3x3 convs once deployed cost what the teacher's do
    sized = synthesize("region_0", inputs, [output], region, ARCHNET, region, {"conv2d", "add"}, region=gm.region_0,
                       legalize=legal_lowering)
    assert isinstance(sized.student, RepStudent) and sized.size.startswith("2 x re-parameterised conv3x3 of 8")
    assert sized.cost_ratio <= 1.0 and runs_on(ARCHNET, sized.student, inputs)
    # a budget of x1.5 buys the teacher's own form, which starts at the teacher
    roomy = synthesize("region_0", inputs, [output], region, ARCHNET, region.scaled(GROWTH_CAP), {"conv2d", "add"},
                       region=gm.region_0, legalize=legal_lowering)
    assert isinstance(roomy.student, TeacherForm) and 1.0 < roomy.cost_ratio <= GROWTH_CAP
    # where neither fits, the cheaper generic student is taken
    tighter = synthesize("region_0", inputs, [output], region, ARCHNET, region.scaled(0.4), {"conv2d", "add"},
                         region=gm.region_0, legalize=legal_lowering)
    assert not isinstance(tighter.student, (TeacherForm, RepStudent)) and tighter.cost_ratio < roomy.cost_ratio


@pytest.mark.parametrize("stride, relu_last", [(1, True), (2, False)])
def test_a_re_parameterised_student_is_one_3x3_conv_per_layer_once_deployed(stride, relu_last):
    torch.manual_seed(stride)
    out_ch = 8 if stride == 1 else 12
    student = RepStudent(8, out_ch, out_ch, stride, relu_last)
    x = torch.randn(4, 8, 9, 7) * 2 + 1  # odd sizes: the stride-2 layer's border
    student.train()
    for _ in range(3):
        student(x)  # running statistics away from the initial 0 and 1
    randomized(student)
    deployed = student.deployed()
    kinds = [type(m).__name__ for m in deployed]
    assert kinds == ["Conv2d", "ReLU", "Conv2d"] + (["ReLU"] if relu_last else [])
    assert all(m.kernel_size == (3, 3) for m in deployed if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        assert relative_error(deployed(x), student(x)) <= 1e-5  # exact in eval mode, up to float rounding
    assert runs_on(ARCHNET, student, (x,))


def test_a_region_without_an_exact_or_nearest_legal_form_has_no_teacher_form():
    gate = symbolic(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Sigmoid()), torch.randn(1, 4, 5, 5))
    assert teacher_forms(gate, (torch.randn(2, 4, 5, 5),), ARCHNET, legal_lowering) == []


def test_a_student_merging_maps_wider_than_the_convs_read_is_legal_by_construction():
    torch.manual_seed(0)
    inputs = [torch.randn(2, 320, 4, 4), torch.randn(2, 384, 4, 4)]  # 704 channels; archnet's convs read 512
    output = torch.randn(2, 384, 4, 4)
    student = synthesize("region_0", inputs, [output], ROOMY, ARCHNET, ROOMY, {"add"}).student
    assert runs_on(ARCHNET, student, inputs)
    assert max(c.in_channels for c in student.modules() if isinstance(c, nn.Conv2d)) <= 512


class PoolGelu(nn.Module):
    """A 3x3 stride-2 max pool (archnet pools 2x2) and a GELU (archnet has ReLU) between convs."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x):
        return self.conv2(F.gelu(self.pool(self.conv1(x))))


def test_an_op_without_an_exact_form_takes_its_nearest_legal_op_and_the_form_says_so():
    torch.manual_seed(0)
    region = symbolic(PoolGelu(), torch.randn(1, 4, 16, 16))
    inputs = (torch.randn(8, 4, 16, 16),)
    form, = teacher_forms(region, inputs, ARCHNET, legal_lowering)
    assert runs_on(ARCHNET, form, inputs)
    assert form.approximations == ("max_pool2d 3x3 -> 2x2", "gelu -> relu") and "approximate" in form.label
    with torch.no_grad():
        want = region(*inputs)
        # it starts from the teacher's weights with other ops, so not at the teacher (random weights
        # keep activations near 0, where GELU and ReLU differ most)
        assert 1e-3 < relative_error(form(*inputs), want) < 1
    first, last = trained_loss_drop(form, list(inputs), want, lr=1e-3)
    assert last < first


def test_a_strided_7x7_stem_takes_patches_and_a_3x3_conv_equal_inside_the_border():
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 16, 7, stride=2, padding=3)
    for size in (33, 32):  # odd: exact everywhere; even: the last row and column differ
        x = torch.randn(4, 3, size, size)
        form = teacher_forms(symbolic(stem, x[:1]), (x,), ARCHNET, legal_lowering)[-1]  # after the exact one
        assert runs_on(ARCHNET, form, (x,))
        assert form.approximations == ("conv2d 7x7 stride 2 -> 3x3 stride 2 (patches) + 3x3",)
        with torch.no_grad():
            got, want = form(x), stem(x)
        inner = (slice(None), slice(None), slice(0, -1), slice(0, -1))
        torch.testing.assert_close(got[inner] if size % 2 == 0 else got, want[inner] if size % 2 == 0 else want,
                                   rtol=1e-4, atol=1e-5)
