"""Graphviz pictures of a graph: nodes coloured by verdict, illegal ones with their reason,
tensor shapes on edges, and nodes grouped into clusters by module hierarchy."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import graphviz
from torch import fx

from fxrewrite.errors import UsageError
from fxrewrite.files import atomic_write_bytes, atomic_write_text
from fxrewrite.ir import format_value, op_view, tensor_shape
from fxrewrite.target import Target

FORMATS = ("svg", "png", "pdf", "dot")
MAX_CLUSTER_DEPTH = 3
_FILL = {"legal": "#c8e6c9", "illegal": "#ffcdd2", "structural": "#eeeeee"}


def _module_path(node: fx.Node) -> tuple[str, ...]:
    """The module hierarchy the node belongs to, outermost first, cut at MAX_CLUSTER_DEPTH."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = next(reversed(stack.values()))
        qualified = path[0] if isinstance(path, tuple) else str(path)
    elif node.op == "call_module":
        qualified = str(node.target).rpartition(".")[0]
    else:
        qualified = ""
    # export writes L['self'].layer1 style paths; keep just the attribute names
    parts = [p for p in qualified.replace("L['self']", "").replace("['", ".").replace("']", "").split(".") if p]
    return tuple(".".join(parts[: i + 1]) for i in range(min(len(parts), MAX_CLUSTER_DEPTH)))


def to_dot(gm: fx.GraphModule, target: Target | None = None, title: str = "") -> graphviz.Digraph:
    graph = graphviz.Digraph(name="fxrewrite", graph_attr={"rankdir": "TB", "label": title, "labelloc": "t",
                                                           "fontname": "Helvetica"},
                             node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                        "fontsize": "10"},
                             edge_attr={"fontname": "Helvetica", "fontsize": "8", "color": "#607d8b"})
    clusters: dict[tuple[str, ...], list[str]] = {}
    hidden = set()
    for node in gm.graph.nodes:
        view = op_view(node)
        if view.kind == "constant":
            hidden.add(node)  # parameters would double the picture; their values are not the point
            continue
        status = "structural" if view.structural else "legal"
        lines = [node.name, view.kind if view.kind != "unknown" else f"unknown: {view.attrs['target']}"]
        if view.kind != "unknown" and view.describe():
            lines.extend(textwrap.wrap(view.describe(), 40))
        if target is not None and not view.structural:
            verdict = target.verdict(node)
            status = "legal" if verdict.legal else "illegal"
            if not verdict.legal:
                lines.extend(textwrap.wrap(verdict.reason, 48))
        label = "\n".join(lines)
        attrs = {"fillcolor": _FILL[status] if target is not None or status == "structural" else "#e3f2fd"}
        if status == "illegal":
            attrs["color"] = "#c62828"
            attrs["penwidth"] = "2"
        clusters.setdefault(_module_path(node), []).append(node.name)
        graph.node(node.name, label=label, **attrs)
    _emit_clusters(graph, clusters)
    for node in gm.graph.nodes:
        if node in hidden:
            continue
        for source in node.all_input_nodes:
            if source in hidden:
                continue
            shape = tensor_shape(source)
            graph.edge(source.name, node.name, label=format_value(shape) if shape is not None else "")
    return graph


def _emit_clusters(graph: graphviz.Digraph, clusters: dict[tuple[str, ...], list[str]]) -> None:
    """Nest clusters by path prefix so that layer1 contains layer1.0, which contains its nodes."""
    children: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for path in clusters:
        for depth in range(len(path)):
            children.setdefault(path[:depth], set()).add(path[: depth + 1])

    def emit(parent: graphviz.Digraph, path: tuple[str, ...]) -> None:
        for name in clusters.get(path, []):
            parent.node(name)
        for child in sorted(children.get(path, ())):
            with parent.subgraph(name=f"cluster_{child[-1]}") as sub:
                sub.attr(label=child[-1], style="rounded", color="#90a4ae", fontname="Helvetica", fontsize="11")
                emit(sub, child)

    emit(graph, ())


def dot_text_instead(path: Path) -> Path | None:
    """Where `render` writes the DOT text instead of drawing `path` (graphviz's `dot` program is
    missing), else None."""
    if path.suffix.lower() == ".dot" or shutil.which("dot") is not None:
        return None
    return path.with_suffix(".dot")


def render(gm: fx.GraphModule, path: str | Path, target: Target | None = None, title: str = "") -> tuple[Path, str]:
    """Write the picture to `path` (format from its suffix). Returns the path written and a note.

    Without the `dot` binary, the DOT text is written next to `path` with a .dot suffix instead.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UsageError(f"cannot draw {path.name}: the file suffix must be one of {', '.join('.' + f for f in FORMATS)}")
    dot = to_dot(gm, target, title)
    if fmt == "dot":
        return atomic_write_text(path, dot.source), ""
    dot_path = dot_text_instead(path)
    if dot_path is not None:
        atomic_write_text(dot_path, dot.source)
        return dot_path, (f"graphviz's `dot` program is not installed, so {path.name} was not drawn; wrote the DOT "
                          f"text to {dot_path} instead (install it with `apt-get install -y graphviz`, then run "
                          f"`dot -T{fmt} {dot_path} -o {path}`)")
    return atomic_write_bytes(path, dot.pipe(format=fmt)), ""
