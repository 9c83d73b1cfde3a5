"""Reading a target file: TOML, validated by hand so that every error names the file, the key path
and what was expected (a schema library would report less precisely for this small format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fxrewrite.errors import TargetError
from fxrewrite.ir import KINDS, STRUCTURAL_KINDS, UNKNOWN
from fxrewrite.target.host_cpu import HOST_CPUS
from fxrewrite.target.compilers import ACCELERATORS
from fxrewrite.target.constraints import CONSTRAINTS, MAC_KINDS, Invalid, OpRule, choices
from fxrewrite.target.formats import GRANULARITIES, QuantFormat, QuantSpec
from fxrewrite.target.performance import Performance


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
            raise Invalid('a non-empty list of formats such as ["int8"]')
        formats = tuple(QuantFormat.parse(f) for f in raw)
    except Invalid as exc:
        raise TargetError(f"{origin}: {where}.formats: expected {exc}") from None
    try:
        granularity = choices(GRANULARITIES)(table.get("granularity", ["per-tensor"]))
    except Invalid as exc:
        raise TargetError(f"{origin}: {where}.granularity: expected {exc}") from None
    return QuantSpec(formats, granularity)


def _parse_constraints(table: Any, where: str, origin: str, kind: str | None = None) -> dict[str, Any]:
    """Constraints of one op kind, or (kind None) the shape limits that apply to every op."""
    table = _expect_table(table, where, origin)
    constraints = {}
    for key, raw in table.items():
        constraint = CONSTRAINTS.get(key)
        allowed = [k for k, c in CONSTRAINTS.items() if kind is not None or (c.attr is None and c.kinds is None)]
        if constraint is None or key not in allowed:
            raise TargetError(f"{origin}: unknown key {where}.{key}; expected one of {', '.join(allowed)}")
        if kind is not None and not constraint.applies_to(kind):
            what = (f"has no {constraint.attr} attribute to constrain" if constraint.kinds is None
                    else f"is not one of {', '.join(sorted(constraint.kinds))}, which it applies to")
            raise TargetError(f"{origin}: {where}.{key}: {kind} {what}")
        try:
            constraints[key] = constraint.parse(raw)
        except Invalid as exc:
            raise TargetError(f"{origin}: {where}.{key}: expected {exc}, got {raw!r}") from None
    return constraints


def _compiler(meta: dict[str, Any], origin: str) -> tuple[str, str]:
    """The vendor compiler a target names and the accelerator it compiles for (fxrewrite.target.compilers),
    ("", "") where it names none."""
    if "vela_accelerator" in meta:  # the older spelling of compiler = "vela" with its accelerator
        if "compiler" in meta or "accelerator" in meta:
            raise TargetError(f"{origin}: target.vela_accelerator: give either it or target.compiler and "
                              "target.accelerator, not both")
        compiler, accelerator, key = "vela", meta["vela_accelerator"], "vela_accelerator"
    else:
        compiler, accelerator, key = meta.get("compiler", ""), meta.get("accelerator", ""), "accelerator"
    if not compiler and not accelerator:
        return "", ""
    if compiler not in ACCELERATORS:
        raise TargetError(f"{origin}: target.compiler: {compiler!r} is no compiler fxrewrite knows; it knows "
                          f"{', '.join(ACCELERATORS)}")
    if accelerator not in ACCELERATORS[compiler]:
        name = "Vela" if compiler == "vela" else compiler
        raise TargetError(f"{origin}: target.{key}: {accelerator!r} is not an accelerator {name} compiles for; "
                          f"{name}'s are {', '.join(ACCELERATORS[compiler])}")
    return compiler, accelerator


def read_target(doc: dict[str, Any], origin: str) -> dict[str, Any]:
    """The fields of a `Target` from its decoded TOML document, parsed and validated; `origin` names
    the file in error messages."""
    _check_keys(doc, ("target", "quantization", "defaults", "performance", "cost", "ops"), "", origin)
    meta = _expect_table(doc.get("target", {}), "target", origin)
    _check_keys(meta, ("name", "description", "source", "allow_all_ops", "compiler", "accelerator",
                       "vela_accelerator"), "target.", origin)
    for key in ("name", "description", "source", "compiler", "accelerator", "vela_accelerator"):
        if key in meta and not isinstance(meta[key], str):
            raise TargetError(f"{origin}: target.{key}: expected a string, got {meta[key]!r}")
    compiler, accelerator = _compiler(meta, origin)
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
    if any(not f.is_float for f in (*weights.formats, *activations.formats)):
        # integer formats: the MAC array reads quantized operands unless the file says otherwise
        for kind in MAC_KINDS & rules.keys():
            rules[kind] = OpRule(kind, {**rules[kind].constraints,
                                        "quantized_operands": rules[kind].constraints.get("quantized_operands", True)})
    return dict(
        name=meta["name"],
        description=meta.get("description", ""),
        ops=rules,
        weights=weights,
        activations=activations,
        allow_all_ops=allow_all,
        source=meta.get("source", ""),
        compiler=compiler,
        accelerator=accelerator,
        defaults=defaults,
        performance=_parse_performance(doc, weights, activations, origin),
    )


#: how the restructuring planner costs a target without a vendor compiler: by the estimate below, or
#: (a target that is this CPU) by latency measured here (fxrewrite.ship.host_latency)
MEASURES = ("estimate", "host-latency")
#: numeric keys of the [performance] table
PERFORMANCE_NUMBERS = ("clock_mhz", "dense_macs_per_cycle", "depthwise_macs_per_cycle", "pooling_per_cycle",
                       "elementwise_per_cycle", "lut_per_cycle", "bytes_per_cycle", "weight_bytes_per_cycle",
                       "op_overhead_cycles", "growth_max")


#: the range a performance number may take: rates, bandwidths, clocks and budgets of real chips lie far inside
PERFORMANCE_RANGE = (1e-6, 1e12)


def _op_kinds(table: dict, key: str, doc: dict, origin: str) -> frozenset[str]:
    kinds = table.get(key, [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise TargetError(f"{origin}: performance.{key}: expected a list of op kinds, got {kinds!r}")
    # a fused op costs nothing whether or not the chip runs it alone (Ethos-U folds a batch norm it
    # runs slowly on its own into the conv before it), so fused_ops only needs vocabulary kinds
    known = set(KINDS) if key == "fused_ops" else set(doc.get("ops", {}))  # free_ops: declared, as lut_ops
    unknown = sorted(set(kinds) - known)
    if unknown:
        where = "in the vocabulary" if key == "fused_ops" else "declared under [ops]"
        raise TargetError(f"{origin}: performance.{key}: {', '.join(unknown)} not {where}")
    return frozenset(kinds)


def _parse_performance(doc: dict, weights: QuantSpec, activations: QuantSpec, origin: str) -> Performance:
    if "cost" in doc:
        raise TargetError(f"{origin}: the [cost] table was replaced by [performance] (throughputs per cycle, "
                          "bandwidth, clock, per-op overhead, growth_max); see the README's target file section")
    table = _expect_table(doc.get("performance", {}), "performance", origin)
    _check_keys(table, (*PERFORMANCE_NUMBERS, "lut_ops", "fused_ops", "free_ops", "measured_by", "host_cpu"),
                "performance.", origin)
    measured_by = table.get("measured_by", "estimate")
    if measured_by not in MEASURES:
        raise TargetError(f"{origin}: performance.measured_by: expected one of {', '.join(map(repr, MEASURES))}, "
                          f"got {measured_by!r}")
    host_cpu = table.get("host_cpu", "")
    if host_cpu not in ("", *HOST_CPUS):
        raise TargetError(f"{origin}: performance.host_cpu: expected one of {', '.join(map(repr, HOST_CPUS))}, "
                          f"got {host_cpu!r}")
    numbers = {}
    for key in PERFORMANCE_NUMBERS:
        if key not in table:
            continue
        value = table[key]
        low = 0 if key == "op_overhead_cycles" else PERFORMANCE_RANGE[0]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= PERFORMANCE_RANGE[1]:
            raise TargetError(f"{origin}: performance.{key}: expected a {'' if low == 0 else 'positive '}number from {low:g} to "
                              f"{PERFORMANCE_RANGE[1]:g}, got {value!r}")
        numbers[key] = float(value)
    kinds = {key: _op_kinds(table, key, doc, origin) for key in ("lut_ops", "fused_ops", "free_ops")}
    return Performance(**numbers, **kinds, measured_by=measured_by, host_cpu=host_cpu,
                       activation_bytes=max(f.bits for f in activations.formats) / 8,
                       weight_bytes=max(f.bits for f in weights.formats) / 8)
