"""Declarative patterns over op views, and rules: a pattern plus a replacement that may decline.

A `Pattern` matches a node by op kind, attribute predicates (each with words for the failure
reason), operand patterns with named captures, and how many users a matched intermediate may have.
A `Rule` is a pattern plus a replacement function that returns the node replacing the root, or a
`Decline` saying why not; rule sets compose with `+`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import fx

from fxrewrite.ir import OpView, answered_upward, op_view, tensor_shape
from fxrewrite.rewrite.rewriter import Rewriter

Predicate = Callable[[OpView], bool]


@dataclass(frozen=True)
class Pattern:
    kinds: frozenset[str] | None
    where: tuple[tuple[str, Predicate], ...] = ()
    operands: tuple[Pattern | None, ...] | None = None
    name: str | None = None
    single_user: bool = False

    def match(self, node: fx.Node) -> Match | str:
        """A Match, or the reason this node does not match."""
        captures: dict[str, OpView] = {}
        reason = self._match(node, captures, is_root=True)
        return reason if reason is not None else Match(captures, tuple(v.node for v in captures.values()))

    def _match(self, node: Any, captures: dict[str, OpView], is_root: bool) -> str | None:
        if not isinstance(node, fx.Node):
            return f"operand {node!r} is not a node"
        view = op_view(node)
        label = "/".join(sorted(self.kinds or {"any op"}))
        if self.kinds is not None and view.kind not in self.kinds:
            return f"{node.name} is {view.kind}, not {label}"
        for words, predicate in self.where:
            if not predicate(view):
                return f"{node.name} ({view.kind}): not {words}"
        if self.single_user and not is_root and len(node.users) != 1:
            return f"{node.name} has {len(node.users)} users; the rewrite needs it to have one"
        if self.operands is not None:
            if len(view.inputs) < len(self.operands):
                return f"{node.name} has {len(view.inputs)} operands, pattern expects {len(self.operands)}"
            for sub, operand in zip(self.operands, view.inputs):
                if sub is not None and (reason := sub._match(operand, captures, is_root=False)) is not None:
                    return reason
        if self.name is not None:
            captures[self.name] = view
        return None


def op(kinds: str | Iterable[str] | None, *operands: Pattern | None, name: str | None = None,
       where: Mapping[str, Predicate] | None = None, single_user: bool = False) -> Pattern:
    """Build a pattern: ``op("batch_norm", op("conv2d", name="conv", single_user=True), name="bn")``."""
    kind_set = None if kinds is None else frozenset([kinds] if isinstance(kinds, str) else kinds)
    return Pattern(kind_set, tuple((where or {}).items()), operands or None, name, single_user)


@dataclass(frozen=True)
class Match:
    captures: Mapping[str, OpView]
    nodes: tuple[fx.Node, ...]

    def __getitem__(self, name: str) -> OpView:
        return self.captures[name]


@dataclass(frozen=True)
class Decline:
    """A replacement function's refusal, with the reason a person can act on."""

    reason: str


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Pattern
    replace: Callable[[Match, Rewriter], fx.Node | Decline]
    priority: int = 0

    @property
    def root_kinds(self) -> frozenset[str] | None:
        return self.pattern.kinds


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def __add__(self, other: RuleSet) -> RuleSet:
        return RuleSet(self.rules + other.rules)

    def for_kind(self, kind: str) -> list[Rule]:
        """The rules that may root on `kind`, highest priority first."""
        if kind not in self._by_kind:
            self._by_kind[kind] = sorted((r for r in self.rules if r.root_kinds is None or kind in r.root_kinds),
                                         key=lambda r: -r.priority)
        return self._by_kind[kind]

    @functools.cached_property
    def _by_kind(self) -> dict[str, list[Rule]]:
        # filled per kind as asked: a driver asks once per node, and hashing the rules (what a
        # module-level cache keyed on them would do) costs more than the lookup it saves
        return {}


def tensor_operands(view: OpView) -> bool:
    """A `where` condition: a binary op of two tensors (not a tensor and a number)."""
    return view.attrs["operands"] == "tensor"


def same_shape(a: fx.Node, b: fx.Node) -> bool:
    """Whether `a` and `b` have the same shape at every batch size, not only the example's: a tensor
    made from parameters alone keeps its leading 1 when the batch grows (swin_t adds its position
    bias, (1, heads, L, L), to the attention scores, (N, heads, L, L)), so it broadcasts there."""
    shape = tensor_shape(a)
    if shape is None or shape != tensor_shape(b):
        return False
    return not shape or shape[0] != 1 or reads_an_input(a) == reads_an_input(b)


#: the attribute a node's answer to reads_an_input is kept in: exact rewrites replace a value by the
#: same function of the inputs, so whether it reads any stays true of the node
_READS_INPUT = "_fxrewrite_reads_input"


def reads_an_input(node: fx.Node) -> bool:
    """Whether a graph input is among `node`'s ancestors; answered once per node."""
    return answered_upward(node, _READS_INPUT, lambda n: n.all_input_nodes,
                           lambda n, read: n.op == "placeholder" or any(read))
