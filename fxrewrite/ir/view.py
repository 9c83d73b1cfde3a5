"""`op_view(node)`: every fx node, whatever its form, seen as one `OpView`.

A module call (`nn.Conv2d`), a functional call (`F.conv2d`, `torch.conv2d`), a tensor method
(`x.add(y)`) and an ATen op (`aten.conv2d.default`) of the same op produce the same kind and the
same normalized attributes; nodes outside the vocabulary get kind `unknown` with the reason.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from fxrewrite.ir.attributes import no_fields
from fxrewrite.ir.graph import as_list, fetch_attr, format_value, tensor_shape
from fxrewrite.ir.vocabulary import (BY_KIND, FUNCTION_INDEX, METHOD_INDEX, MODULE_INDEX, STRUCTURAL_KINDS, UNKNOWN,
                                     OpDef)


@dataclass(frozen=True)
class OpView:
    """One node seen through the vocabulary."""

    kind: str
    attrs: Mapping[str, Any]
    inputs: tuple[fx.Node, ...]
    node: fx.Node
    source: str
    #: the node's arguments bound to the canonical signature (module forms: the module's parameters)
    args: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def structural(self) -> bool:
        return self.kind in STRUCTURAL_KINDS

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(s for s in (tensor_shape(n) for n in self.inputs) if s is not None)

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return tensor_shape(self.node)

    def describe(self) -> str:
        """Key attributes in words, e.g. ``kernel=7x7 stride=1x1 grouping=depthwise``; defaults left out."""
        return " ".join(f"{k}={format_value(v)}" for k, v in self.attrs.items() if not _is_default(k, v, self.attrs))


def _is_default(key: str, value: Any, attrs: Mapping[str, Any]) -> bool:
    if key == "dilation":
        return all(d == 1 for d in value)
    if key == "groups":
        return attrs.get("grouping") != "grouped"
    return (key, value) in (("padding_mode", "zeros"), ("ceil_mode", False), ("count_include_pad", True))


def qualified_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target.__name__}" if target.namespace == "aten" else str(target)
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    return f"{module}.{name}" if module and module != "builtins" else name


def _module_def(module: nn.Module) -> OpDef | None:
    for cls in type(module).__mro__:
        op = MODULE_INDEX.get(cls)
        # A subclass that overrides forward computes something else: it is not this op.
        if op is not None and type(module).forward is cls.forward:
            return op
    return None


@functools.lru_cache(maxsize=None)
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def _bind(signature: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = _signature(signature).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _operand_nodes(op: OpDef, bound: Mapping[str, Any]) -> tuple[fx.Node, ...]:
    nodes: list[fx.Node] = []
    for name in op.operands:
        for value in as_list(bound.get(name)):
            if isinstance(value, fx.Node):
                nodes.append(value)
    return tuple(nodes)


def _why_unknown(target: Any) -> str:
    name = target._schema.name if isinstance(target, torch._ops.OpOverload) else ""
    if name.endswith("_") and not name.split("::")[-1].startswith("_"):
        return ("an in-place op whose tensor is read again under another name (an input, a parameter or a "
                "view), so it cannot be made functional; write the model without that in-place op")
    return "function is not in the vocabulary"


def _unknown(node: fx.Node, source: str, why: str) -> OpView:
    return OpView(UNKNOWN, {"target": qualified_name(node.target), "why": why}, tuple(node.all_input_nodes), node, source)


def _produces_tensor(node: fx.Node) -> bool:
    return tensor_shape(node) is not None


def op_view(node: fx.Node) -> OpView:
    """See `node` through the vocabulary; nodes outside it get kind `unknown`. Memoized while the
    node's arguments, its recorded shape and (for a module call) its module object stay the same:
    rewrites build new nodes and modules rather than editing them, and distillation swaps modules.
    A pass asks about every node and the planner's trials ask again."""
    module = fetch_attr(node.graph.owning_module, str(node.target)) if node.op == "call_module" else None
    meta = node.meta.get("tensor_meta")
    # kept on the node itself, not in node.meta (copied with the node) nor in a weak mapping (the view
    # refers to its node, so the entry would keep every graph alive); compared field by field because
    # a pass asks about every node
    cached = getattr(node, VIEW_ATTRIBUTE, None)
    if (cached is not None and cached[0] is node.args and cached[1] is node.kwargs and cached[2] is meta
            and cached[3] is module):
        return cached[4]
    view = _compute_view(node)
    setattr(node, VIEW_ATTRIBUTE, (node.args, node.kwargs, meta, module, view))
    return view


#: the attribute op_view memoizes a node's view in
VIEW_ATTRIBUTE = "_fxrewrite_view"


def _compute_view(node: fx.Node) -> OpView:
    if node.op == "placeholder":
        return OpView("input", {}, (), node, "placeholder")
    if node.op == "output":
        return OpView("output", {}, tuple(node.all_input_nodes), node, "output")
    if node.op == "get_attr":
        return OpView("constant", {}, (), node, "get_attr")
    if node.op == "call_module":
        module = fetch_attr(node.graph.owning_module, str(node.target))
        source = f"module {type(module).__module__}.{type(module).__qualname__}"
        if str(node.target) == "_guards_fn":
            return OpView("assert", {}, tuple(node.all_input_nodes), node, source)
        op = _module_def(module) if isinstance(module, nn.Module) else None
        if op is None:
            return _unknown(node, source, f"module class {type(module).__qualname__} is not in the vocabulary")
        bound = {"input": node.args[0] if node.args else None, **_module_of(op, module)(module)}
        return _finish(op, bound, node, source)
    if node.op == "call_method":
        entry = METHOD_INDEX.get(str(node.target))
        source = f"method Tensor.{node.target}"
        if entry is None:
            return _unknown(node, source, f"tensor method .{node.target}() is not in the vocabulary")
        op, signature = entry
    elif getattr(node.target, "__module__", None) in ("_operator", "operator") and not _produces_tensor(node):
        return OpView("shape", {}, tuple(node.all_input_nodes), node, f"function {qualified_name(node.target)}")
    else:
        key = node.target.overloadpacket if isinstance(node.target, torch._ops.OpOverload) else node.target
        entry = FUNCTION_INDEX.get(key)
        source = f"function {qualified_name(node.target)}"
        if entry is None:
            return _unknown(node, source, _why_unknown(node.target))
        op, signature = entry
    if op.kind == "getitem" and _produces_tensor(node) and _produces_tensor(node.args[0]):
        op = BY_KIND["slice"]
    try:
        bound = _bind(signature, tuple(node.args), dict(node.kwargs))
    except TypeError as exc:
        return _unknown(node, source, f"its arguments do not fit {op.kind}: {exc}")
    return _finish(op, bound, node, source)


def _module_of(op: OpDef, module: nn.Module) -> Callable[[nn.Module], dict[str, Any]]:
    for cls in type(module).__mro__:
        if cls in op.modules:
            return op.modules[cls]
    return no_fields


def _finish(op: OpDef, bound: dict[str, Any], node: fx.Node, source: str) -> OpView:
    try:
        attrs = op.attrs(bound)
    except (TypeError, ValueError, KeyError) as exc:
        return _unknown(node, source, f"cannot read the attributes of {op.kind}: {exc}")
    if op.kind == "hardtanh" and (attrs["min_val"], attrs["max_val"]) == (0.0, 6.0):
        op, attrs = BY_KIND["relu6"], {}
    inputs = _operand_nodes(op, bound) if op.kind != "multihead_attention" else tuple(node.all_input_nodes)
    return OpView(op.kind, attrs, inputs, node, source, bound)


def is_fake_quant(value: Any) -> bool:
    """Whether `value` is a quantize-dequantize node, in its torch.* or aten.* form."""
    return isinstance(value, fx.Node) and value.op == "call_function" and op_view(value).kind == "fake_quant"


def _call_targets(op: OpDef) -> tuple[Any, ...]:
    """Every call_function target that is a form of `op`, ATen overload packets expanded to their overloads."""
    targets: list[Any] = []
    for fn in (*op.functions, *op.special_forms):
        if isinstance(fn, torch._ops.OpOverloadPacket):
            targets.extend(getattr(fn, name) for name in fn.overloads())
        else:
            targets.append(fn)
    return tuple(targets)


_FAKE_QUANT_TARGETS = _call_targets(BY_KIND["fake_quant"])


def is_quantized_graph(graph: fx.Graph) -> bool:
    """Whether any node of `graph` is a quantize-dequantize. fx keeps a table of nodes by target,
    so this costs a few look-ups, not a walk over the graph."""
    return any(graph.find_nodes(op="call_function", target=t, sort=False) for t in _FAKE_QUANT_TARGETS)
