"""`check(gm, target)`: the verdict for every node of a graph. A dry run: the graph is not changed."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from torch import fx

from fxrewrite.cost import Estimate
from fxrewrite.ir import format_value, op_view
from fxrewrite.nn_mass import graph_nn_mass
from fxrewrite.target import Target

JSON_VERSION = 3  # 2: regions left the check report (the lowering computes them); 3: `estimate` added


@dataclass(frozen=True)
class NodeVerdict:
    name: str
    kind: str
    attrs: str
    shape: str
    verdict: str  # "legal" or "illegal"
    reason: str
    source: str


@dataclass(frozen=True)
class CheckReport:
    target: str
    model: str
    rows: tuple[NodeVerdict, ...]
    #: the graph's latency on the target as it stands (illegal nodes costed as if the target ran them)
    estimate: Estimate | None = None
    #: per graph compiled (`--vela`), Vela's numbers (fxrewrite.ship.ethos_u.VelaResult.to_dict)
    vela: dict[str, Any] | None = None
    #: fxrewrite.nn_mass of the whole graph
    nn_mass: float = 0.0

    @property
    def illegal(self) -> tuple[NodeVerdict, ...]:
        return tuple(r for r in self.rows if r.verdict == "illegal")

    @property
    def all_legal(self) -> bool:
        return not self.illegal

    def counts(self) -> dict[str, dict[str, int]]:
        """Per op kind: how many nodes are legal and how many illegal."""
        totals: dict[str, Counter] = {}
        for row in self.rows:
            totals.setdefault(row.kind, Counter())[row.verdict] += 1
        return {kind: {"legal": c["legal"], "illegal": c["illegal"]} for kind, c in sorted(totals.items())}

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "version": JSON_VERSION,
            "model": self.model,
            "target": self.target,
            "summary": {"nodes": len(self.rows), "legal": len(self.rows) - len(self.illegal),
                        "illegal": len(self.illegal)},
            "nodes": [asdict(r) for r in self.rows],
            "counts": self.counts(),
            "nn_mass": self.nn_mass,
        }
        if self.estimate is not None:
            document["estimate"] = self.estimate.as_dict()
        if self.vela is not None:
            document["vela"] = self.vela
        return json.dumps(document, indent=2)

    def to_text(self) -> str:
        headers = ("node", "kind", "attributes", "output", "verdict")
        table = [(r.name, r.kind, r.attrs, r.shape, r.verdict if r.verdict == "legal" else f"ILLEGAL: {r.reason}")
                 for r in self.rows]
        widths = [min(max(len(str(row[i])) for row in [headers, *table]), 48) for i in range(len(headers) - 1)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  " + headers[-1]]
        for row in table:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        lines.append("")
        lines.append(f"{'op kind':24} {'legal':>6} {'illegal':>8}")
        for kind, c in self.counts().items():
            lines.append(f"{kind:24} {c['legal']:>6} {c['illegal']:>8}")
        lines.append("")
        lines.append(f"{self.model} on {self.target}: {len(self.rows)} nodes, {len(self.illegal)} illegal"
                     + ("" if self.illegal else " -- every node is legal"))
        if self.estimate is not None:
            lines.append(f"estimated: {self.estimate.to_text()}")
            lines.append(f"dearest nodes: {self.estimate.dearest_text()}")
        lines.append(f"NN-Mass: {self.nn_mass:,.0f} (skip links' width x the channel-mixing layers they bypass)")
        return "\n".join(lines)


def check(gm: fx.GraphModule, target: Target, model: str = "") -> CheckReport:
    """Judge every node of `gm` against `target` (each verdict from `Target.verdict`)."""
    rows = []
    for node in gm.graph.nodes:
        view = op_view(node)
        verdict = target.verdict(node)
        shape = view.output_shape
        rows.append(NodeVerdict(
            name=node.name,
            kind=view.kind,
            attrs=view.describe() if view.kind != "unknown" else view.attrs["target"],
            shape=format_value(shape) if shape is not None else "",
            verdict="legal" if verdict.legal else "illegal",
            reason=verdict.reason,
            source=view.source,
        ))
    return CheckReport(target.name, model or type(gm).__name__, tuple(rows), Estimate.of(gm, target.performance),
                       nn_mass=graph_nn_mass(gm))
