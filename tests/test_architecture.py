"""The house's shape: every module imports, imports point one way through the layers, and no
import cycle exists, counting imports inside functions."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

import fxrewrite

PACKAGE_DIR = Path(fxrewrite.__file__).parent
PASSES_DIR = PACKAGE_DIR.parent / "passes"

#: the flow, lowest first: a module may import its own layer and the ones before it, never a later one
LAYERS = (
    ("fxrewrite.errors", "fxrewrite.files", "fxrewrite.examples"),
    ("fxrewrite.ir",),
    ("fxrewrite.frontend",),
    ("fxrewrite.target",),
    ("fxrewrite.nn_mass", "fxrewrite.cost", "fxrewrite.metrics"),
    ("fxrewrite.legality",),
    ("fxrewrite.rewrite",),
    ("fxrewrite.passes",),
    ("fxrewrite.quant",),
    # distillation by job: regions, then the students that stand in for them, then their training
    ("fxrewrite.distill.regions",),
    ("fxrewrite.distill.sizing", "fxrewrite.distill.nearest_legal", "fxrewrite.distill.students"),
    ("fxrewrite.distill.training",),
    ("fxrewrite.distill",),
    ("fxrewrite.lowering",),
    ("fxrewrite.report", "fxrewrite.export", "fxrewrite.ship", "fxrewrite.viz"),
    ("fxrewrite.writers",),
    ("fxrewrite.api", "fxrewrite.generate"),
    ("fxrewrite.cli", "fxrewrite.docs",
     "fxrewrite.entry", "fxrewrite.__main__", "fxrewrite"),
)


def module_files(package_dir: Path, passes_dir: Path | None) -> dict[str, Path]:
    """Module name -> file, for the package and (installed as fxrewrite.passes) the passes folder."""
    files = {}
    for root, prefix in ((package_dir, "fxrewrite"), (passes_dir, "fxrewrite.passes")):
        if root is None:
            continue
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([prefix, *parts])] = path
    return files


def import_graph(files: dict[str, Path]) -> nx.DiGraph:
    """An edge A -> B for every `import B` / `from B import ...` in A, at any depth of A's code."""
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                # `from package import submodule` reads the submodule; other names come from the module itself
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files]
                targets = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in files and t != name)
    return graph


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer if top != "fxrewrite"):
            return index
    assert module == "fxrewrite", f"{module} is in no layer: add it to LAYERS"
    return len(LAYERS) - 1


def test_every_module_imports():
    for name in module_files(PACKAGE_DIR, PASSES_DIR):
        importlib.import_module(name)


def test_no_import_cycle_even_inside_functions():
    graph = import_graph(module_files(PACKAGE_DIR, PASSES_DIR))
    assert list(nx.simple_cycles(graph)) == []


def test_imports_point_down_the_layers():
    graph = import_graph(module_files(PACKAGE_DIR, PASSES_DIR))
    upward = [(a, b) for a, b in graph.edges if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_cycle_check_sees_an_import_inside_a_function(tmp_path):
    package = tmp_path / "fxrewrite"
    (package / "ir").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ir" / "__init__.py").write_text("from fxrewrite.lowering import plan\n")
    (package / "lowering.py").write_text("def plan():\n    import fxrewrite.ir\n")
    graph = import_graph(module_files(package, None))
    assert list(nx.simple_cycles(graph)) != []
    assert any(layer_of(b) > layer_of(a) for a, b in graph.edges)


@pytest.mark.parametrize("name", sorted(module_files(PACKAGE_DIR, PASSES_DIR)))
def test_modules_stay_small(name):
    """An alarm, not a rule: a module this long likely holds more than one job; split it by job, never
    by size (a 350-line module with one job beats two with half a job each)."""
    path = module_files(PACKAGE_DIR, PASSES_DIR)[name]
    assert len(path.read_text().splitlines()) <= 400, f"{path} holds more than one job: split it by job"
