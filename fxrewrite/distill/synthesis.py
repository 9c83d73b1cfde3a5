"""A student for one region: the kinds of fxrewrite.distill.students, chosen by what the region
reads and writes and sized by cost (fxrewrite.distill.sizing).

- A region that reads no input computes the same tensors for every sample: its student is them,
  recorded once (students.constant).
- Where the region has an exact legal form, or an approximate one with the nearest legal ops, that
  form is the student (students.teacher_form) when it costs at most the allowance: it is the
  teacher's own maths and starts there. Where it costs more (a residual block's skip on a chip
  without add) and the region is a block of one map in and one map out, a re-parameterised student
  (students.reparameterised: plain 3x3 convs once deployed) is taken where it fits the allowance;
  else the form, where it costs at most what the target lets exact rewrites cost times the allowance.
- Otherwise each output gets a student of the first registered kind that takes it (an image map:
  students.conv; tokens: students.tokens; the rest: students.mlp; students.grid on chips of FC
  layers), the widest that fits the allowance; a region with several outputs gets one per output,
  all reading every input, each with an equal share of the allowance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx

from fxrewrite.cost import Cost
from fxrewrite.distill.sizing import DEFAULT_STUDENT_BUDGET, GROWTH_CAP, Sized, first_within_budget, module_cost
from fxrewrite.distill.students import student_kinds
from fxrewrite.distill.students.base import MultiOutputStudent, Request, TensorInputs
from fxrewrite.distill.students.constant import LABEL as CONSTANT_LABEL, ConstantOutputs
from fxrewrite.distill.students.reparameterised import reparameterised_student
from fxrewrite.distill.students.teacher_form import Legalize, teacher_forms
from fxrewrite.errors import DistillError
from fxrewrite.target import Target


def _one_student(request: Request, teacher: Cost, allowed: Cost) -> Sized:
    for _, rule in student_kinds():
        candidates = rule(request)
        if candidates is not None:
            return first_within_budget(candidates, request.inputs, teacher, allowed, request.target)
    shapes = [tuple(t.shape) for t in request.inputs]
    raise DistillError(f"{request.name}: no student kind takes inputs {shapes} -> output {tuple(request.output.shape)}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor"
    return f"a {type(value).__name__}"


def synthesize(name: str, inputs: Sequence[object], outputs: Sequence[torch.Tensor], teacher: Cost,
               target: Target, allowed: Cost | None = None, region_kinds: set[str] | None = None,
               size_only: frozenset[int] = frozenset(), region: fx.GraphModule | None = None,
               legalize: Legalize | None = None) -> Sized:
    """A student for one region from its recorded inputs and output tensors (see the module policy),
    costing at most `allowed` where any candidate does (default: the teacher region's cost `teacher`
    times DEFAULT_STUDENT_BUDGET); `region_kinds` are the teacher region's op kinds (whether it mixes
    tokens). The inputs at `size_only` positions are read by the region for their sizes alone (BERT's
    token ids, for the batch size): the student does not read them, as it reads no int. Where the
    teacher `region` has an exact or approximate legal form by `legalize`
    (fxrewrite.distill.students.teacher_form), that form (the exact one first) is the student when it
    costs at most what the target lets exact rewrites cost (`growth_max`, at least GROWTH_CAP) times
    `allowed`: it is the teacher's own maths and starts there, where a cheaper generic student starts
    from scratch; else when no other candidate fits and it is the cheaper."""
    unreal = [_describe(o) for o in outputs if not (isinstance(o, torch.Tensor) and o.is_floating_point())]
    if unreal or not outputs:
        raise DistillError(f"{name}: no student for a region that outputs {', '.join(unreal) or 'no tensor'}: a "
                           "student of legal ops writes real floating-point tensors; keep such ops (complex "
                           "numbers, sort indices, sizes) outside what the target must run, or rewrite them")
    if not inputs:
        return Sized(ConstantOutputs(outputs), CONSTANT_LABEL, 0.0, cost=Cost(0.0, 0))
    # a tensor without the batch (a position table made from parameters) is the same for every sample:
    # a student learns its effect as a constant, so it reads only the per-sample tensors
    batch = outputs[0].shape[0] if outputs[0].dim() else None
    positions = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor) and i not in size_only
                 and (batch is None or (value.dim() > 0 and value.shape[0] == batch))]
    tensors = [inputs[i] for i in positions]
    integers = [tuple(t.shape) for t in tensors if not t.is_floating_point()]
    if integers:
        raise DistillError(f"{name}: no student for integer inputs {integers} (token ids) on {target.name}: a "
                           "student's layers read floats, and the target has no one-hot encoding (one_hot and "
                           "cast, as archnet-transformer declares) to turn ids into them")
    allowed = allowed or teacher.scaled(DEFAULT_STUDENT_BUDGET)
    # a teacher form reads what its region reads (an image for its batch size alone is a legal shape read)
    every = [value for value in inputs if isinstance(value, torch.Tensor)]
    forms = teacher_forms(region, every, target, legalize) if region is not None and legalize is not None \
        and len(every) == len(inputs) else []
    costs = [module_cost(form, every, target) for form in forms]
    for form, cost in zip(forms, costs):  # the exact form first
        if cost.within(allowed):
            return Sized(form, form.label, cost.ratio(teacher), cost=cost)
    plain = reparameterised_student(every, outputs[0]) if forms and len(outputs) == 1 else None
    if plain is not None and (plain_cost := module_cost(plain[1], every, target)).within(allowed):
        return Sized(plain[1], plain[0], plain_cost.ratio(teacher), cost=plain_cost)
    for form, cost in zip(forms, costs):
        if cost.within(allowed.scaled(max(GROWTH_CAP, target.performance.growth_max or 0))):
            return Sized(form, form.label, cost.ratio(teacher), cost=cost)
    parts = len(outputs)
    sized = [_one_student(Request(name, tensors, out, frozenset(region_kinds or ()), target), teacher.divided(parts),
                          allowed.divided(parts)) for out in outputs]
    student = sized[0].student if len(sized) == 1 else MultiOutputStudent([s.student for s in sized])
    if len(positions) != len(inputs):
        student = TensorInputs(student, positions)
    simple = len(sized) == 1 and len(positions) == len(inputs)  # only a plain student is regrown as it is
    generic = Sized(student, "; ".join(s.size for s in sized), sum(s.cost_ratio for s in sized) / len(sized),
                    sized[0].larger if simple else None, all(s.fits for s in sized),
                    cost=sum((s.cost for s in sized), Cost(0.0, 0)))
    # where no generic student fits either, a form that starts as the teacher is taken if it is cheaper
    cheapest = min(zip(costs, forms), key=lambda pair: pair[0].ratio(teacher), default=None)
    if cheapest is not None and not generic.fits and cheapest[0].ratio(teacher) < generic.cost_ratio:
        return Sized(cheapest[1], cheapest[1].label, cheapest[0].ratio(teacher), cost=cheapest[0])
    return generic
