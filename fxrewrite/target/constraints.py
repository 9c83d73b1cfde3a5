"""The constraint language of target files: each constraint reads a value from TOML, checks one op
view and says in words why it fails. `CONSTRAINTS` is the table a target file draws from; a
constraint's `words` are printed by `fxrewrite targets NAME`, its reasons by `fxrewrite check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fxrewrite.ir import OpView, format_value, is_fake_quant, is_quantized_graph, op_def


@dataclass(frozen=True)
class Verdict:
    legal: bool
    reason: str = ""


class Invalid(Exception):
    """A constraint value of the wrong type or range; the message says what was expected."""


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Invalid("a non-empty list of integers")
    return tuple(value)


def _positive_ints(value: Any) -> tuple[int, ...]:
    values = _ints(value)
    if any(v < 1 for v in values):
        raise Invalid(f"a non-empty list of positive integers, got {list(values)}")
    return values


def _range(value: Any) -> tuple[int, int]:
    lo_hi = _ints(value)
    if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
        raise Invalid("[low, high] with 0 <= low <= high")
    return lo_hi  # type: ignore[return-value]


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Invalid("a positive integer")
    return value


def _sizes(value: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not value:
        raise Invalid('a non-empty list of sizes such as "3x3"')
    sizes = []
    for item in value:
        match = re.fullmatch(r"([1-9]\d*)x([1-9]\d*)", item) if isinstance(item, str) else None
        if match is None:
            raise Invalid(f'positive sizes written "HxW" such as "3x3", got {item!r}')
        sizes.append((int(match[1]), int(match[2])))
    return tuple(sizes)


def choices(allowed: Sequence[str]) -> Callable[[Any], tuple[str, ...]]:
    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or any(v not in allowed for v in value):
            raise Invalid(f"a non-empty list drawn from {list(allowed)}")
        return tuple(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("true or false")
    return value


def _tensors(view: OpView) -> list[tuple[int, ...]]:
    shapes = list(view.input_shapes)
    if view.output_shape is not None:
        shapes.append(view.output_shape)
    return shapes


def _size_text(sizes: Sequence[tuple[int, ...]]) -> str:
    return "{" + ", ".join("x".join(map(str, s)) for s in sizes) + "}"


def _dilated(view: OpView) -> tuple[int, ...]:
    dilation = view.attrs.get("dilation", (1,) * len(view.attrs["kernel"]))
    return tuple(d * (k - 1) + 1 for k, d in zip(view.attrs["kernel"], dilation))


@dataclass(frozen=True)
class Constraint:
    """One kind of limit a target may put on an op: how to read it, check it and say it."""

    key: str
    parse: Callable[[Any], Any]
    #: the op attribute it reads; None for limits on tensor shapes, which apply to every op
    attr: str | None
    check: Callable[[Any, OpView], str | None]
    words: Callable[[Any], str]
    #: the op kinds it may be put on, where no attribute says so
    kinds: frozenset[str] | None = None

    def applies_to(self, kind: str) -> bool:
        if self.kinds is not None:
            return kind in self.kinds
        return self.attr is None or kind_has_attr(kind, self.attr)


def _in_list(attr: str, label: str) -> Callable[[Any, OpView], str | None]:
    def check(allowed: Sequence[Any], view: OpView) -> str | None:
        value = view.attrs[attr]
        values = value if isinstance(value, tuple) else (value,)
        bad = [v for v in values if v not in allowed]
        return f"{label} {format_value(value)} not in allowed {label}s {{{', '.join(map(str, allowed))}}}" if bad else None

    return check


def _in_range(attr: str, label: str, getter: Callable[[OpView], Sequence[int]] | None = None):
    def check(lo_hi: tuple[int, int], view: OpView) -> str | None:
        values = getter(view) if getter else view.attrs[attr]
        values = values if isinstance(values, tuple) else (values,)
        if all(lo_hi[0] <= v <= lo_hi[1] for v in values):
            return None
        return f"{label} {format_value(tuple(values))} outside [{lo_hi[0]}, {lo_hi[1]}]"

    return check


def _check_kernels(allowed: tuple[tuple[int, int], ...], view: OpView) -> str | None:
    kernel = view.attrs["kernel"]
    return None if tuple(kernel) in allowed else f"kernel {format_value(kernel)} not in allowed kernels {_size_text(allowed)}"


def _check_output_sizes(allowed: tuple[tuple[int, int], ...], view: OpView) -> str | None:
    size = view.attrs["output_size"]
    return None if tuple(size) in allowed else f"output size {format_value(size)} not in allowed sizes {_size_text(allowed)}"


def _check_max(label: str, getter: Callable[[OpView], int | None]):
    def check(limit: int, view: OpView) -> str | None:
        value = getter(view)
        return f"{label} {value} exceeds the limit {limit}" if value is not None and value > limit else None

    return check


def _check_padding_max(limit: int, view: OpView) -> str | None:
    padding = view.attrs["padding"]
    if not isinstance(padding, tuple):
        return f"padding {padding!r} is asymmetric; only explicit padding up to {limit} is allowed"
    return f"padding {format_value(padding)} exceeds the limit {limit}" if max(padding) > limit else None


def _check_flag(attr: str):
    def check(allowed: bool, view: OpView) -> str | None:
        return None if allowed or not view.attrs[attr] else f"{attr} is not supported"

    return check


def _check_scales(allowed: Sequence[int], view: OpView) -> str | None:
    scale = view.attrs["scale"]
    if scale[0] == scale[1] and scale[0] in allowed:
        return None
    return f"scale {format_value(scale)} is not one factor in {{{', '.join(map(str, allowed))}}} along height and width"


def _rank(view: OpView) -> int | None:
    return max((len(s) for s in _tensors(view)), default=None)


def _largest_dim(view: OpView) -> int | None:
    return max((d for s in _tensors(view) for d in s), default=None)


def _batch(view: OpView) -> int | None:
    shapes = view.input_shapes
    return shapes[0][0] if shapes and shapes[0] else None


def _check_quantized_operands(required: bool, view: OpView) -> str | None:
    """In a quantized graph, the MAC array reads only quantized operands: a conv or linear layer's
    weights and input must each come from a quantize-dequantize node."""
    if not required or not is_quantized_graph(view.node.graph):
        return None
    operands = (("weights", view.args.get("weight")), ("input", view.inputs[0] if view.inputs else None))
    floats = [what for what, node in operands if not is_fake_quant(node)]
    if not floats:
        return None
    return (f"reads float32 {' and '.join(floats)} in a quantized graph; quantize them in one of the target's "
            "formats (fxrewrite.quant, `fxrewrite lower --calib ... --wbits/--abits`)")


#: ops whose operands feed the MAC array; a target with integer formats requires them quantized
MAC_KINDS = frozenset({"conv2d", "linear"})


def _channels(attr_names: Sequence[str]) -> Callable[[OpView], int | None]:
    return lambda view: next((view.attrs[a] for a in attr_names if a in view.attrs), None)


CONSTRAINTS: dict[str, Constraint] = {
    c.key: c
    for c in (
        Constraint("kernels", _sizes, "kernel", _check_kernels, lambda v: f"kernel in {_size_text(v)}"),
        Constraint("kernel_range", _range, "kernel", _in_range("kernel", "kernel"),
                   lambda v: f"each kernel side in [{v[0]}, {v[1]}]"),
        Constraint("dilated_kernel_range", _range, "kernel", _in_range("kernel", "dilated kernel", _dilated),
                   lambda v: f"each dilated kernel side in [{v[0]}, {v[1]}]"),
        Constraint("dilated_kernel_area_max", _positive, "kernel",
                   _check_max("dilated kernel area", lambda view: _dilated(view)[0] * _dilated(view)[-1]),
                   lambda v: f"dilated kernel area at most {v}"),
        Constraint("strides", _positive_ints, "stride", _in_list("stride", "stride"), lambda v: f"stride in {set(v)}"),
        Constraint("stride_range", _range, "stride", _in_range("stride", "stride"),
                   lambda v: f"each stride in [{v[0]}, {v[1]}]"),
        Constraint("dilations", _positive_ints, "dilation", _in_list("dilation", "dilation"), lambda v: f"dilation in {set(v)}"),
        Constraint("padding_max", _positive, "padding", _check_padding_max, lambda v: f"padding at most {v}"),
        Constraint("groupings", choices(("dense", "depthwise", "grouped")), "grouping",
                   _in_list("grouping", "grouping"), lambda v: f"grouping in {{{', '.join(v)}}}"),
        Constraint("in_channels_max", _positive, "in_ch", _check_max("input channels", _channels(("in_ch", "in_features"))),
                   lambda v: f"at most {v} input channels"),
        Constraint("out_channels_max", _positive, "out_ch",
                   _check_max("output channels", _channels(("out_ch", "out_features"))),
                   lambda v: f"at most {v} output channels"),
        Constraint("dims", _ints, "dim", _in_list("dim", "dim"), lambda v: f"along dim in {set(v)}"),
        Constraint("reduce_dims", _ints, "dims", _in_list("dims", "reduced dim"), lambda v: f"reducing only dims in {set(v)}"),
        Constraint("output_sizes", _sizes, "output_size", _check_output_sizes, lambda v: f"output size in {_size_text(v)}"),
        Constraint("operands", choices(("tensor", "scalar")), "operands", _in_list("operands", "operand kind"),
                   lambda v: f"operands: {' or '.join(v)}"),
        Constraint("broadcast", _bool, "broadcast", _check_flag("broadcast"),
                   lambda v: "broadcasting allowed" if v else "no broadcasting"),
        Constraint("ceil_mode", _bool, "ceil_mode", _check_flag("ceil_mode"),
                   lambda v: "ceil_mode allowed" if v else "floor rounding only (no ceil_mode)"),
        Constraint("modes", choices(("nearest", "bilinear")), "mode", _in_list("mode", "mode"),
                   lambda v: f"mode in {{{', '.join(v)}}}"),
        Constraint("scales", _positive_ints, "scale", _check_scales,
                   lambda v: f"one scale along height and width, in {{{', '.join(map(str, v))}}}"),
        Constraint("align_corners", _bool, "align_corners", _check_flag("align_corners"),
                   lambda v: "align_corners allowed" if v else "align_corners=False only"),
        Constraint("quantized_operands", _bool, None, _check_quantized_operands,
                   lambda v: "quantized weights and input once the graph is quantized" if v
                   else "float operands allowed in a quantized graph", kinds=MAC_KINDS),
        Constraint("batch_max", _positive, None, _check_max("batch size", _batch), lambda v: f"batch at most {v}"),
        Constraint("rank_max", _positive, None, _check_max("tensor rank", _rank), lambda v: f"tensor rank at most {v}"),
        Constraint("dim_size_max", _positive, None, _check_max("tensor dimension", _largest_dim),
                   lambda v: f"every tensor dimension at most {v}"),
    )
}

# Constraints whose attribute every conv-like or linear op carries under another name.
_ATTR_ALIASES = {"in_ch": ("in_ch", "in_features"), "out_ch": ("out_ch", "out_features")}


def kind_has_attr(kind: str, attr: str) -> bool:
    names = op_def(kind).attr_names
    return any(a in names for a in _ATTR_ALIASES.get(attr, (attr,)))


@dataclass(frozen=True)
class OpRule:
    """What a target allows for one op kind: the constraints it puts on it, with their values."""

    kind: str
    constraints: Mapping[str, Any] = field(default_factory=dict)

    def words(self) -> str:
        if not self.constraints:
            return "any attributes"
        return "; ".join(CONSTRAINTS[key].words(value) for key, value in self.constraints.items())
