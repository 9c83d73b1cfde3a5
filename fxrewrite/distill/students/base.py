"""What every student is, and how the kinds that build them for a region's output are found.

A student is an `nn.Module` of legal ops with its region's input and output shapes. Each kind (one
file of this package) subclasses `Student`, and says:
- its maths (its docstring);
- how it starts from the teacher (`initialise_from`): by default, a student layer takes the weights
  of a teacher layer of its region where that layer has a legal counterpart of the same shape and
  stride: a 1x1 conv or linear goes in the centre of a 3x3, a depthwise conv becomes the diagonal of
  a dense one, a 3x3 conv is copied; larger kernels have no counterpart (a crop is not the same
  maths) and start from random weights;
- whether it starts equal to its region (`starts_at_teacher`), which makes it train at a smaller rate.

A kind that builds students for one region output registers its candidates with `@student_kind(rank)`:
given the output to stand in for (`Request`), it returns the students it can build, widest first,
or None where that output is not its kind; kinds are asked in rank order and the first that answers
builds the student (fxrewrite.distill.synthesis). Kinds that stand in for a whole region (the
teacher form, constant outputs, the re-parameterised block) are chosen by synthesis before any of
these. A kind that trains a form it does not deploy says so in `deployed`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.ir import op_view
from fxrewrite.quant.prepare import fold_for_quantization
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import block_diagonal, conv_weights
from fxrewrite.target import Target

#: a skip path is taken where an input of the output's shape already points the output's way
SKIP_COSINE = 0.5

#: a kind's students for one output: (label, builder), widest first
Candidates = list[tuple[str, Callable[[], nn.Module]]]


class Student(nn.Module):
    """A block of legal ops standing in for one region (module docstring)."""

    #: the student computes what its region does before training (an exact teacher form)
    starts_at_teacher: bool = False

    @property
    def kind(self) -> str:
        """The kind's name, as reports show it."""
        return type(self).__name__

    def initialise_from(self, region: fx.GraphModule) -> int:
        """Start layers from the teacher `region`'s (module docstring); returns how many started there."""
        return seed_from_teacher(self, region)

    def deployed(self) -> nn.Module:
        """The module that runs on the chip, computing what this student does in eval mode: itself,
        unless its kind trains a form it does not deploy (students.reparameterised)."""
        return self


class MultiOutputStudent(Student):
    """One student per output of a region with several, each reading every input."""

    def __init__(self, students: Sequence[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(students)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(head(*inputs) for head in self.heads)

    def deployed(self) -> nn.Module:
        return MultiOutputStudent([deployed(head) for head in self.heads])


class TensorInputs(Student):
    """A student of the region's tensor inputs alone: sizes read at run time (the batch size a
    reshape needs) reach a region as inputs too, and the student does not need them."""

    def __init__(self, student: Student, positions: Sequence[int]):
        super().__init__()
        self.student, self.positions = student, tuple(positions)

    @property
    def kind(self) -> str:
        return self.student.kind

    def forward(self, *inputs: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.student(*(inputs[i] for i in self.positions))

    def deployed(self) -> nn.Module:
        return TensorInputs(deployed(self.student), self.positions)


def deployed(module: nn.Module) -> nn.Module:
    """`module` as it runs on the chip: a student's deployed form (Student.deployed), any other module itself."""
    return module.deployed() if isinstance(module, Student) else module


@dataclass(frozen=True)
class Request:
    """One region output a student must produce from the region's tensor inputs."""

    name: str
    inputs: Sequence[torch.Tensor]
    output: torch.Tensor
    #: the teacher region's op kinds (whether it mixes tokens)
    region_kinds: frozenset[str]
    target: Target

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(t.shape) for t in self.inputs]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape)


#: builds a kind's candidates for a request, or None where the output is not its kind
KindRule = Callable[[Request], "Candidates | None"]

#: (rank, kind name, rule), asked lowest rank first
_KINDS: list[tuple[int, str, KindRule]] = []


def student_kind(rank: int) -> Callable[[KindRule], KindRule]:
    """Register a kind's candidate rule, asked in `rank` order; its name is its module's."""
    def register(rule: KindRule) -> KindRule:
        name = rule.__module__.rsplit(".", 1)[-1]
        if any(known == name for _, known, _ in _KINDS):
            raise ValueError(f"student kind {name!r} is registered twice")
        _KINDS.append((rank, name, rule))
        _KINDS.sort(key=lambda entry: entry[0])
        return rule
    return register


def student_kinds() -> list[tuple[str, KindRule]]:
    """The registered kinds, in the order they are asked."""
    return [(name, rule) for _, name, rule in _KINDS]


def runs_on(target: Target, module: nn.Module, inputs: Sequence[torch.Tensor]) -> bool:
    """Whether every op of `module`, as deployed (batch norms folded), is legal on `target`."""
    if target.allow_all_ops:
        return True
    with torch.no_grad():
        gm = fold_for_quantization(deployed(copy.deepcopy(module).eval()), tuple(inputs))
    return all(target.verdict(n).legal for n in gm.graph.nodes if not op_view(n).structural)


def skip_input(inputs: Sequence[torch.Tensor], output: torch.Tensor) -> int | None:
    """The input that already points the output's way (a residual path), if any."""
    return next((i for i, t in enumerate(inputs) if t.shape == output.shape
                 and F.cosine_similarity(t.flatten(), output.flatten(), dim=0) > SKIP_COSINE), None)


def _dense_3x3(weight: torch.Tensor, groups: int) -> torch.Tensor | None:
    """The dense 3x3 kernel a 1x1 / 3x3, dense or depthwise kernel equals, or None."""
    out_ch, per_group, kh, kw = weight.shape
    if (kh, kw) not in ((1, 1), (3, 3)) or groups not in (1, out_ch) or (groups > 1 and per_group != 1):
        return None
    border = (3 - kh) // 2
    return F.pad(block_diagonal(weight, groups), (border, border, border, border))


def _teacher_kernels(region: fx.GraphModule) -> list[tuple[str, tuple[int, ...], torch.Tensor, torch.Tensor | None]]:
    """(role, stride, weight, bias) of each region layer that has a legal counterpart."""
    found = []
    for node in region.graph.nodes:
        view = op_view(node)
        if view.kind not in ("conv2d", "linear"):
            continue
        weights = conv_weights(view)
        if isinstance(weights, Decline):
            continue
        weight, bias = weights
        if view.kind == "linear":
            found.append(("linear", (1, 1), weight, bias))
            found.append(("conv", (1, 1), _dense_3x3(weight[:, :, None, None], 1), bias))
        elif view.attrs["padding"] == tuple((k - 1) // 2 for k in view.attrs["kernel"]):
            kernel = _dense_3x3(weight, view.attrs["groups"])
            if kernel is not None:
                found.append(("conv", view.attrs["stride"], kernel, bias))
    return found


@torch.no_grad()
def seed_from_teacher(student: nn.Module, region: fx.GraphModule) -> int:
    """Start student layers from teacher layers with a legal counterpart (module docstring); returns how many."""
    available = _teacher_kernels(region)
    seeded = 0
    for layer in student.modules():
        role = "conv" if isinstance(layer, nn.Conv2d) else "linear" if isinstance(layer, nn.Linear) else None
        if role is None or (role == "conv" and tuple(layer.padding) != (1, 1)):
            continue
        stride = tuple(layer.stride) if role == "conv" else (1, 1)
        for index, (kind, teacher_stride, weight, bias) in enumerate(available):
            if kind == role and teacher_stride == stride and weight.shape == layer.weight.shape:
                layer.weight.copy_(weight)
                if layer.bias is not None:
                    layer.bias.copy_(bias if bias is not None else torch.zeros_like(layer.bias))
                del available[index]
                seeded += 1
                break
    return seeded
