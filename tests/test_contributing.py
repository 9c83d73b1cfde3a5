"""The contributor's guide (docs/contributing.md) stays true: each worked example under docs/examples/
is the file a contributor would write, and works as the guide says."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fxrewrite
from fxrewrite.cost import Cost
from fxrewrite.distill import synthesize
from fxrewrite.distill.students import base
from fxrewrite.frontend import capture
from fxrewrite.rewrite import registry
from fxrewrite.target import Target
from fxrewrite.writers import WRITERS

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"


def _import(name: str):
    spec = importlib.util.spec_from_file_location(f"contributing_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tanh_as_sigmoid():
    """The example pass, registered for one test (the library's passes are what every other test sees)."""
    _import("tanh_as_sigmoid")
    try:
        yield registry.registered_passes()["tanh-as-sigmoid"]
    finally:
        registry._REGISTRY.pop("tanh-as-sigmoid")
        registry._ORIGINS.pop("tanh-as-sigmoid")


class Tanh(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.conv, self.functional = nn.Conv2d(3, 4, 3, stride=2, padding=1), functional
        self.tanh = nn.Tanh()

    def forward(self, x):
        y = self.conv(x)
        return torch.tanh(y) if self.functional else self.tanh(y)


@pytest.mark.parametrize("functional, frontend", [(False, "symbolic"), (True, "symbolic"), (True, "export")],
                         ids=["module", "functional", "aten"])
def test_the_example_pass_lowers_tanh_exactly_on_the_example_chip(tanh_as_sigmoid, functional, frontend):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 13) * 4  # odd sizes, a stride and border pixels; values across tanh's range
    model = Tanh(functional).eval()
    lowered = fxrewrite.lower(capture(model, (x,), frontend), (x,), target=EXAMPLES / "sigmoid-chip.toml")
    assert lowered.legal and lowered.report.rewrites.get("tanh-as-sigmoid") == 1
    assert lowered.report.max_relative_error < 1e-6
    torch.testing.assert_close(lowered.gm(x), model(x), rtol=0, atol=1e-6)


def test_the_example_chip_states_only_what_differs():
    chip, base = Target.load(EXAMPLES / "sigmoid-chip.toml"), Target.load("npu-generic")
    assert set(chip.ops) == set(base.ops) | {"sub"} and chip.ops["conv2d"] == base.ops["conv2d"]
    assert chip.performance == dataclasses.replace(base.performance, growth_max=3.0)
    assert [Path(f).name for f in chip.files] == ["sigmoid-chip.toml", "npu-generic.toml"]


def test_the_example_writer_is_found_by_its_suffix(tmp_path, monkeypatch):
    monkeypatch.setitem(WRITERS, ".npz", _import("npz_writer").WRITER)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    lowered = fxrewrite.lower(model, (torch.randn(1, 3, 8, 8),), target="npu-generic")
    written = lowered.save(tmp_path / "m.npz")
    with np.load(written.path) as arrays:
        assert sorted(arrays.files) == sorted(lowered.gm.state_dict())


@pytest.fixture
def separable_student():
    """The example student kind, registered for one test (the library's kinds are what every other test sees)."""
    module = _import("separable_student")
    try:
        yield module
    finally:
        base._KINDS[:] = [entry for entry in base._KINDS if entry[1] != "contributing_separable_student"]


def test_the_example_student_kind_is_asked_before_the_conv_student(separable_student):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.GELU(), nn.Conv2d(6, 4, 1))
    region = torch.fx.symbolic_trace(teacher)
    x = torch.randn(8, 6, 9, 9)
    sized = synthesize("region_0", [x], [teacher(x).detach()], Cost(1e9, 10**9), Target.load("npu-generic"))
    student = sized.student
    assert isinstance(student, separable_student.SeparableStudent) and student.kind == "SeparableStudent"
    assert sized.size == "separable 3x3 of 6 -> 4"
    assert student.initialise_from(region) == 2  # the teacher's depthwise 3x3 and its 1x1 conv
    torch.testing.assert_close(student.depthwise[0].weight, teacher[0].weight)
    torch.testing.assert_close(student.pointwise[0].bias, teacher[2].bias)
    assert student(x).shape == (8, 4, 9, 9)
    # a map that changes size is not its kind: the conv student takes it
    halved = synthesize("region_0", [x], [torch.randn(8, 4, 5, 5)], Cost(1e9, 10**9), Target.load("npu-generic"))
    assert halved.student.kind == "ConvStudent"
