"""Declarative chip descriptions (`targets/*.toml`) and the legality verdict for one op view.

A target lists the op kinds it runs, each with constraints drawn from `CONSTRAINTS`, and the
quantization formats it accepts for weights and activations. Validation is hand-written so that
every error names the file, the key path and what was expected (a schema library would report
less precisely for this small format).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fxrewrite.cost import CostWeights
from fxrewrite.errors import TargetError
from fxrewrite.ops import KINDS, STRUCTURAL_KINDS, UNKNOWN, OpView, format_value, op_def

_BUILTIN_PACKAGE = "fxrewrite.targets"


@dataclass(frozen=True)
class Verdict:
    legal: bool
    reason: str = ""


# --- constraints --------------------------------------------------------------------------------


class _Invalid(Exception):
    """A constraint value of the wrong type or range; the message says what was expected."""


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Invalid("a non-empty list of integers")
    return tuple(value)


def _range(value: Any) -> tuple[int, int]:
    lo_hi = _ints(value)
    if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
        raise _Invalid("[low, high] with 0 <= low <= high")
    return lo_hi  # type: ignore[return-value]


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _Invalid("a positive integer")
    return value


def _sizes(value: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid('a non-empty list of sizes such as "3x3"')
    sizes = []
    for item in value:
        match = re.fullmatch(r"(\d+)x(\d+)", item) if isinstance(item, str) else None
        if match is None:
            raise _Invalid(f'sizes written "HxW" such as "3x3", got {item!r}')
        sizes.append((int(match[1]), int(match[2])))
    return tuple(sizes)


def _choices(allowed: Sequence[str]) -> Callable[[Any], tuple[str, ...]]:
    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or any(v not in allowed for v in value):
            raise _Invalid(f"a non-empty list drawn from {list(allowed)}")
        return tuple(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
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


def _rank(view: OpView) -> int | None:
    return max((len(s) for s in _tensors(view)), default=None)


def _largest_dim(view: OpView) -> int | None:
    return max((d for s in _tensors(view) for d in s), default=None)


def _batch(view: OpView) -> int | None:
    shapes = view.input_shapes
    return shapes[0][0] if shapes and shapes[0] else None


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
        Constraint("strides", _ints, "stride", _in_list("stride", "stride"), lambda v: f"stride in {set(v)}"),
        Constraint("stride_range", _range, "stride", _in_range("stride", "stride"),
                   lambda v: f"each stride in [{v[0]}, {v[1]}]"),
        Constraint("dilations", _ints, "dilation", _in_list("dilation", "dilation"), lambda v: f"dilation in {set(v)}"),
        Constraint("padding_max", _positive, "padding", _check_padding_max, lambda v: f"padding at most {v}"),
        Constraint("groupings", _choices(("dense", "depthwise", "grouped")), "grouping",
                   _in_list("grouping", "grouping"), lambda v: f"grouping in {{{', '.join(v)}}}"),
        Constraint("in_channels_max", _positive, "in_ch", _check_max("input channels", _channels(("in_ch", "in_features"))),
                   lambda v: f"at most {v} input channels"),
        Constraint("out_channels_max", _positive, "out_ch",
                   _check_max("output channels", _channels(("out_ch", "out_features"))),
                   lambda v: f"at most {v} output channels"),
        Constraint("dims", _ints, "dim", _in_list("dim", "dim"), lambda v: f"along dim in {set(v)}"),
        Constraint("reduce_dims", _ints, "dims", _in_list("dims", "reduced dim"), lambda v: f"reducing only dims in {set(v)}"),
        Constraint("output_sizes", _sizes, "output_size", _check_output_sizes, lambda v: f"output size in {_size_text(v)}"),
        Constraint("operands", _choices(("tensor", "scalar")), "operands", _in_list("operands", "operand kind"),
                   lambda v: f"operands: {' or '.join(v)}"),
        Constraint("broadcast", _bool, "broadcast", _check_flag("broadcast"),
                   lambda v: "broadcasting allowed" if v else "no broadcasting"),
        Constraint("ceil_mode", _bool, "ceil_mode", _check_flag("ceil_mode"),
                   lambda v: "ceil_mode allowed" if v else "floor rounding only (no ceil_mode)"),
        Constraint("batch_max", _positive, None, _check_max("batch size", _batch), lambda v: f"batch at most {v}"),
        Constraint("rank_max", _positive, None, _check_max("tensor rank", _rank), lambda v: f"tensor rank at most {v}"),
        Constraint("dim_size_max", _positive, None, _check_max("tensor dimension", _largest_dim),
                   lambda v: f"every tensor dimension at most {v}"),
    )
}

# Constraints whose attribute every conv-like or linear op carries under another name.
_ATTR_ALIASES = {"in_ch": ("in_ch", "in_features"), "out_ch": ("out_ch", "out_features")}


def _kind_has_attr(kind: str, attr: str) -> bool:
    names = op_def(kind).attr_names
    return any(a in names for a in _ATTR_ALIASES.get(attr, (attr,)))


# --- quantization formats ---------------------------------------------------------------------

GRANULARITIES = ("per-tensor", "per-channel")


@dataclass(frozen=True)
class QuantFormat:
    """A number format: `int4` is 4-bit signed integer, `uint8` 8-bit unsigned, `float32` no quantization."""

    name: str
    bits: int
    signed: bool
    is_float: bool = False

    @classmethod
    def parse(cls, text: str) -> QuantFormat:
        match = re.fullmatch(r"(u?int|float)(\d+)", text)
        if match is None or int(match[2]) not in ((2, 3, 4, 5, 6, 7, 8, 16, 32) if match[1] != "float" else (16, 32)):
            raise _Invalid('formats such as "int8", "uint4", "int2" or "float32"')
        return cls(text, int(match[2]), match[1] != "uint", match[1] == "float")

    @classmethod
    def of_range(cls, qmin: int, qmax: int) -> QuantFormat | None:
        """The integer format whose grid [qmin, qmax] is: (0, 15) uint4; (-8, 7) or narrow (-7, 7) int4."""
        if qmin == 0 and qmax > 0 and (qmax + 1) & qmax == 0:
            return cls(f"uint{qmax.bit_length()}", qmax.bit_length(), False)
        if qmax > 0 and (qmax + 1) & qmax == 0 and qmin in (-qmax, -qmax - 1):
            return cls(f"int{qmax.bit_length() + 1}", qmax.bit_length() + 1, True)
        return None


@dataclass(frozen=True)
class QuantSpec:
    formats: tuple[QuantFormat, ...]
    granularity: tuple[str, ...]

    def accepts(self, fmt: QuantFormat, granularity: str = "per-tensor") -> Verdict:
        if fmt not in self.formats:
            return Verdict(False, f"format {fmt.name} not in {{{', '.join(f.name for f in self.formats)}}}")
        if not fmt.is_float and granularity not in self.granularity:
            return Verdict(False, f"{granularity} quantization not in {{{', '.join(self.granularity)}}}")
        return Verdict(True)

    def words(self) -> str:
        formats = ", ".join(f.name for f in self.formats)
        if all(f.is_float for f in self.formats):
            return formats
        return f"{formats} ({' or '.join(self.granularity)})"


# --- the target --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpRule:
    kind: str
    constraints: Mapping[str, Any] = field(default_factory=dict)

    def words(self) -> str:
        if not self.constraints:
            return "any attributes"
        return "; ".join(CONSTRAINTS[key].words(value) for key, value in self.constraints.items())


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    ops: Mapping[str, OpRule]
    weights: QuantSpec
    activations: QuantSpec
    allow_all_ops: bool = False
    source: str = ""
    #: shape limits applied to every op, including those allowed by allow_all_ops
    defaults: Mapping[str, Any] = field(default_factory=dict)
    cost: CostWeights = CostWeights()

    @classmethod
    def load(cls, name_or_path: str | Path) -> Target:
        """Load a built-in target by name (`archnet`) or a TOML file by path."""
        path = Path(name_or_path)
        if path.suffix == ".toml" or path.exists():
            if not path.is_file():
                raise TargetError(f"target file {path}: no such file")
            return parse_target(path.read_bytes(), str(path))
        resource = resources.files(_BUILTIN_PACKAGE) / f"{name_or_path}.toml"
        if not resource.is_file():
            raise TargetError(f"unknown target {name_or_path!r}: built-in targets are {', '.join(builtin_targets())}, "
                              "or pass the path of a .toml file")
        return parse_target(resource.read_bytes(), str(resource))

    def check(self, view: OpView) -> Verdict:
        if view.structural:
            return Verdict(True)
        if view.kind == UNKNOWN:
            return Verdict(False, f"unknown op {view.attrs['target']}: {view.attrs['why']}, so no target can run it; "
                                  "keep it inside a leaf module that the vocabulary knows, or add it to fxrewrite/ops.py")
        if view.kind == "fake_quant":
            return self.check_format(view)
        rule = self.ops.get(view.kind) or (OpRule(view.kind, self.defaults) if self.allow_all_ops else None)
        if rule is None:
            return Verdict(False, f"{view.kind} is not supported by target {self.name} "
                                  f"(it runs {', '.join(sorted(self.ops))})")
        reasons = [r for r in (CONSTRAINTS[k].check(v, view) for k, v in rule.constraints.items()) if r]
        return Verdict(not reasons, "; ".join(f"{view.kind} {r}" for r in reasons))

    def check_format(self, view: OpView) -> Verdict:
        """A fake-quantization node against the declared weight or activation formats."""
        role, (qmin, qmax) = view.attrs["role"], (view.attrs["qmin"], view.attrs["qmax"])
        fmt = QuantFormat.of_range(qmin, qmax)
        if fmt is None:
            return Verdict(False, f"{role} quantized to [{qmin}, {qmax}], which is no integer format")
        spec = self.weights if role == "weights" else self.activations
        verdict = spec.accepts(fmt, view.attrs["granularity"])
        return verdict if verdict.legal else Verdict(False, f"{role} {verdict.reason} (declared by {self.name})")

    def limit(self, kind: str, key: str) -> Any:
        """The value of one constraint on `kind` (e.g. in_channels_max on conv2d), or None."""
        rule = self.ops.get(kind) or (OpRule(kind, self.defaults) if self.allow_all_ops else None)
        return rule.constraints.get(key) if rule is not None else None

    def report(self) -> str:
        """The supported-ops report: each op with its constraints in words."""
        lines = [f"{self.name}: {self.description}"]
        if self.source:
            lines.append(f"source: {self.source}")
        lines.append(f"weights: {self.weights.words()}")
        lines.append(f"activations: {self.activations.words()}")
        if self.allow_all_ops:
            lines.append("ops: every op in the vocabulary" + (", with these limits:" if self.ops else ""))
            if self.defaults:
                lines.append(f"  (every op)  {OpRule('*', self.defaults).words()}")
        else:
            lines.append("ops:")
        width = max((len(k) for k in self.ops), default=0)
        for kind, rule in sorted(self.ops.items()):
            lines.append(f"  {kind.ljust(width)}  {rule.words()}")
        return "\n".join(lines)


def builtin_targets() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files(_BUILTIN_PACKAGE).iterdir()
                  if p.name.endswith(".toml"))


def _expect_table(value: Any, where: str, origin: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TargetError(f"{origin}: {where} must be a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str, origin: str) -> None:
    for key in table:
        if key not in allowed:
            raise TargetError(f"{origin}: unknown key {where}{key}; expected one of {', '.join(allowed)}")


def _parse_quant(table: Any, where: str, origin: str) -> QuantSpec:
    table = _expect_table(table, where, origin)
    _check_keys(table, ("formats", "granularity"), f"{where}.", origin)
    try:
        raw = table.get("formats")
        if not isinstance(raw, list) or not raw or not all(isinstance(f, str) for f in raw):
            raise _Invalid('a non-empty list of formats such as ["int8"]')
        formats = tuple(QuantFormat.parse(f) for f in raw)
    except _Invalid as exc:
        raise TargetError(f"{origin}: {where}.formats: expected {exc}") from None
    try:
        granularity = _choices(GRANULARITIES)(table.get("granularity", ["per-tensor"]))
    except _Invalid as exc:
        raise TargetError(f"{origin}: {where}.granularity: expected {exc}") from None
    return QuantSpec(formats, granularity)


def _parse_constraints(table: Any, where: str, origin: str, kind: str | None = None) -> dict[str, Any]:
    """Constraints of one op kind, or (kind None) the shape limits that apply to every op."""
    table = _expect_table(table, where, origin)
    constraints = {}
    for key, raw in table.items():
        constraint = CONSTRAINTS.get(key)
        allowed = [k for k, c in CONSTRAINTS.items() if kind is not None or c.attr is None]
        if constraint is None or key not in allowed:
            raise TargetError(f"{origin}: unknown key {where}.{key}; expected one of {', '.join(allowed)}")
        if kind is not None and constraint.attr is not None and not _kind_has_attr(kind, constraint.attr):
            raise TargetError(f"{origin}: {where}.{key}: {kind} has no {constraint.attr} attribute to constrain")
        try:
            constraints[key] = constraint.parse(raw)
        except _Invalid as exc:
            raise TargetError(f"{origin}: {where}.{key}: expected {exc}, got {raw!r}") from None
    return constraints


def parse_target(data: bytes, origin: str) -> Target:
    """Parse and validate a target description; `origin` names the file in error messages."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{origin}: not valid TOML ({exc})") from None
    _check_keys(doc, ("target", "quantization", "defaults", "cost", "ops"), "", origin)
    meta = _expect_table(doc.get("target", {}), "target", origin)
    _check_keys(meta, ("name", "description", "source", "allow_all_ops"), "target.", origin)
    for key in ("name", "description", "source"):
        if key in meta and not isinstance(meta[key], str):
            raise TargetError(f"{origin}: target.{key}: expected a string, got {meta[key]!r}")
    if not meta.get("name"):
        raise TargetError(f"{origin}: target.name: expected a non-empty string")
    allow_all = meta.get("allow_all_ops", False)
    if not isinstance(allow_all, bool):
        raise TargetError(f"{origin}: target.allow_all_ops: expected true or false, got {allow_all!r}")
    quant = _expect_table(doc.get("quantization"), "quantization", origin) if "quantization" in doc else None
    if quant is None:
        raise TargetError(f"{origin}: quantization: missing; declare quantization.weights and quantization.activations")
    _check_keys(quant, ("weights", "activations"), "quantization.", origin)
    for key in ("weights", "activations"):
        if key not in quant:
            raise TargetError(f"{origin}: quantization.{key}: missing")
    defaults = _parse_constraints(doc.get("defaults", {}), "defaults", origin)
    ops_table = _expect_table(doc.get("ops", {}), "ops", origin)
    rules = {}
    for kind, table in ops_table.items():
        if kind not in KINDS or kind in STRUCTURAL_KINDS or kind in ("input", "output", UNKNOWN):
            raise TargetError(f"{origin}: ops.{kind}: unknown op kind; the vocabulary has "
                              f"{', '.join(k for k in KINDS if k not in STRUCTURAL_KINDS and k not in ('input', 'output', UNKNOWN))}")
        rules[kind] = OpRule(kind, {**defaults, **_parse_constraints(table, f"ops.{kind}", origin, kind)})
    if not rules and not allow_all:
        raise TargetError(f"{origin}: ops: a target must allow at least one op (or set target.allow_all_ops = true)")
    weights = _parse_quant(quant["weights"], "quantization.weights", origin)
    activations = _parse_quant(quant["activations"], "quantization.activations", origin)
    return Target(
        name=meta["name"],
        description=meta.get("description", ""),
        ops=rules,
        weights=weights,
        activations=activations,
        allow_all_ops=allow_all,
        source=meta.get("source", ""),
        defaults=defaults,
        cost=_parse_cost(doc.get("cost", {}), weights, activations, origin),
    )


def _parse_cost(table: Any, weights: QuantSpec, activations: QuantSpec, origin: str) -> CostWeights:
    table = _expect_table(table, "cost", origin)
    _check_keys(table, ("mac", "byte", "grouped_mac", "growth_max"), "cost.", origin)
    for key, value in table.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise TargetError(f"{origin}: cost.{key}: expected a non-negative number, got {value!r}")
    return CostWeights(**{k: float(v) for k, v in table.items()},
                       activation_bytes=max(f.bits for f in activations.formats) / 8,
                       weight_bytes=max(f.bits for f in weights.formats) / 8)
