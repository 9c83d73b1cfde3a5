"""`Target`: the ops a chip runs with their constraints, its number formats and its performance
section, and `verdict(node)`: the one place where a node is judged legal or illegal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import fx

from fxrewrite.ir import UNKNOWN, OpView, op_view
from fxrewrite.target.constraints import CONSTRAINTS, OpRule, Verdict
from fxrewrite.target.formats import QuantFormat, QuantSpec
from fxrewrite.target.performance import Performance
from fxrewrite.target.schema import read_target
from fxrewrite.target.sources import read_source, resolved_document

#: the attribute Target.verdict memoizes a node's verdict in
VERDICT_ATTRIBUTE = "_fxrewrite_verdict"


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    ops: Mapping[str, OpRule]
    weights: QuantSpec
    activations: QuantSpec
    allow_all_ops: bool = False
    source: str = ""
    #: the vendor compiler the target is judged by (fxrewrite.target.compilers), e.g. vela; empty: none
    compiler: str = ""
    #: the accelerator that compiler compiles for, e.g. ethos-u55-128
    accelerator: str = ""
    #: shape limits applied to every op, including those allowed by allow_all_ops
    defaults: Mapping[str, Any] = field(default_factory=dict)
    performance: Performance = Performance()
    #: the files the target was read from: its own, then those it extends (none for one parsed from text)
    files: tuple[str, ...] = ()

    @property
    def vela_accelerator(self) -> str:
        """The accelerator where the target is judged by Vela, else empty (the older field's name)."""
        return self.accelerator if self.compiler == "vela" else ""

    @classmethod
    def load(cls, name_or_path: str | Path) -> Target:
        """Load a built-in target by name (`archnet`) or a TOML file by path."""
        return parse_target(*read_source(name_or_path))

    def verdict(self, node: fx.Node) -> Verdict:
        """Whether this target runs `node`, and if not, why. Every caller (check, the picture, the
        regions, the pass filter, the planner) asks here."""
        view = op_view(node)
        # memoized on the node beside its view (see op_view), for the last target that judged it
        cached = getattr(node, VERDICT_ATTRIBUTE, None)
        if cached is not None and cached[0] is self and cached[1] is view:
            return cached[2]
        verdict = self._judge(view)
        setattr(node, VERDICT_ATTRIBUTE, (self, view, verdict))
        return verdict

    def _judge(self, view: OpView) -> Verdict:
        if view.structural:
            return Verdict(True)
        if view.kind == UNKNOWN:
            return Verdict(False, f"unknown op {view.attrs['target']}: {view.attrs['why']}, so no target can run it; "
                                  "keep it inside a leaf module that the vocabulary knows, or add it to "
                                  "fxrewrite/ir/vocabulary.py")
        if view.kind == "fake_quant":
            return self._format_verdict(view)
        rule = self._rule(view.kind)
        if rule is None:
            return Verdict(False, f"{view.kind} is not supported by target {self.name} "
                                  f"(it runs {', '.join(sorted(self.ops))})")
        reasons = [r for r in (CONSTRAINTS[k].check(v, view) for k, v in rule.constraints.items()) if r]
        return Verdict(not reasons, "; ".join(f"{view.kind} {r}" for r in reasons))

    def _rule(self, kind: str) -> OpRule | None:
        return self.ops.get(kind) or (OpRule(kind, self.defaults) if self.allow_all_ops else None)

    def _format_verdict(self, view: OpView) -> Verdict:
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
        rule = self._rule(kind)
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


def parse_target(data: bytes, origin: str) -> Target:
    """Parse and validate a target description, with what it extends (fxrewrite.target.sources);
    `origin` names the file in error messages and is where a relative `extends` is found."""
    document, extended = resolved_document(data, origin)
    own = (origin,) if Path(origin).is_file() else ()
    return Target(**read_target(document, origin), files=(*own, *extended))
