"""The teacher-form student: the region itself, lowered onto the target, as a trainable block.

Arch-Net's students mirror their teacher block and start from its weights (a 1x1 conv as a 3x3 with
the teacher's weight at the centre tap, a residual add as concat + 3x3 conv), so training starts
from the teacher's own function and only has to recover what quantization loses. Where every op of
a region has an exact legal form on the target, that form is such a student: the region's graph is
lowered by the exact pipeline (`Legalize`) without the growth limit (the limit is what kept it for
distillation; the sizing weighs its cost against the other candidates), its batch norms folded into
the layers before them, and it computes f_student(x) = f_teacher(x) at initialisation up to float32
rounding (checked: relative error at most MAX_INIT_ERROR on fresh inputs). Batch norms that could
not be folded keep their statistics (eval mode) while the block trains, so the start stays exact.
Where some op has no exact legal form but a nearest legal op (fxrewrite.distill.nearest_legal: GELU
as ReLU, a 3x3 max pool as a 2x2 one), the form takes it and is approximate: it starts near the
teacher, not at it, and its label says what changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

from fxrewrite.distill.nearest_legal import nearest_legal
from fxrewrite.distill.students.base import Student
from fxrewrite.quant.prepare import fold_for_quantization
from fxrewrite.metrics import relative_error
from fxrewrite.target import Target

#: the largest relative error at initialisation for which the lowered region counts as the teacher's form
MAX_INIT_ERROR = 1e-4
TEACHER_FORM_LABEL = "teacher form (the region's own layers as legal ops, from its weights)"


class TeacherForm(Student):
    """The region's legal lowering (module docstring); its batch norms stay in eval mode. It starts
    from every teacher layer: they are its own."""

    def __init__(self, lowered: fx.GraphModule, approximations: tuple[str, ...] = ()):
        super().__init__()
        self.graph_module = lowered
        #: the nearest legal ops taken where an op had no exact form (fxrewrite.distill.nearest_legal)
        self.approximations = approximations

    @property
    def starts_at_teacher(self) -> bool:
        return not self.approximations

    def initialise_from(self, region: fx.GraphModule) -> int:
        return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in self.modules())

    @property
    def label(self) -> str:
        if not self.approximations:
            return TEACHER_FORM_LABEL
        return f"{TEACHER_FORM_LABEL}, approximate: {', '.join(self.approximations)}"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.graph_module(*inputs)

    def train(self, mode: bool = True) -> TeacherForm:
        super().train(mode)
        for layer in self.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()
        return self


#: lowers a graph exactly onto a target at these inputs, with no growth limit: the legal graph, or None
#: where some node stays illegal (fxrewrite.lowering.exact.legal_lowering; passed in, as lowering
#: builds on distillation)
Legalize = Callable[[fx.GraphModule, Target, tuple[torch.Tensor, ...]], "fx.GraphModule | None"]


def teacher_forms(region: fx.GraphModule, inputs: Sequence[torch.Tensor], target: Target,
                  legalize: Legalize) -> list[TeacherForm]:
    """The region as students of legal ops from its weights: the exact form, equal to it at
    initialisation, where every op has one, and the approximate form with the nearest legal ops
    where some op has one; none where the region reads or writes anything but float tensors."""
    if not inputs or not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in inputs):
        return []
    sample = tuple(t[:2].detach().cpu() for t in inputs)
    region = copy.deepcopy(region).cpu().eval()
    with torch.no_grad():
        wanted = region(*sample)
        if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in _tensors(wanted)):
            return []
        folded = fold_for_quantization(region, sample)  # a conv without its batch norm can take an add in
    forms = []
    exact = _form(copy.deepcopy(folded), (), sample, target, legalize)
    if exact is not None and all(relative_error(g, w) <= MAX_INIT_ERROR
                                 for g, w in zip(_tensors(exact(*sample)), _tensors(wanted))):
        forms.append(exact)
    approximations = tuple(nearest_legal(folded, target, inputs))
    approximate = _form(folded, approximations, sample, target, legalize) if approximations else None
    return forms + ([approximate] if approximate is not None else [])


def _tensors(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _form(graph: fx.GraphModule, approximations: tuple[str, ...], sample: tuple[torch.Tensor, ...], target: Target,
          legalize: Legalize) -> TeacherForm | None:
    lowered = legalize(graph, target, sample)
    if lowered is None:
        return None
    with torch.no_grad():
        return TeacherForm(fold_for_quantization(lowered, sample), approximations).eval()

