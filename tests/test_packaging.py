"""The wheel carries the core, the passes and the target files, and targets load from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sources() -> set[str]:
    """Every module of the source tree, by its path inside the installed package."""
    return ({f"fxrewrite/{p.relative_to(ROOT / 'fxrewrite').as_posix()}" for p in (ROOT / "fxrewrite").rglob("*.py")}
            | {f"fxrewrite/passes/{p.relative_to(ROOT / 'passes').as_posix()}" for p in (ROOT / "passes").rglob("*.py")})


def test_targets_are_found_from_an_installed_wheel(tmp_path):
    # built from a copy of the tracked tree: an in-tree build/ keeps files the tree no longer has
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                "__pycache__", "out", ".*cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("fxrewrite-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fxrewrite/targets/archnet.toml" in names
    missing = sorted(_sources() - set(names))
    assert not missing, f"modules the wheel leaves out (a package missing from pyproject.toml's list?): {missing}"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import fxrewrite, fxrewrite.target as t; "
             "print(fxrewrite.__file__); print(t.builtin_targets()); print(t.Target.load('ethos-u55-256').name)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(site)}, check=True)
    location, listed, loaded = result.stdout.splitlines()
    assert location.startswith(str(site)), "the wheel's copy must be imported, not the source tree"
    assert listed == ("['archnet', 'archnet-transformer', 'cpu-reference', 'ethos-u55-128', 'ethos-u55-256', "
                      "'ethos-u65-256', 'ethos-u65-512', 'ethos-u85-256', 'npu-generic']")
    assert loaded == "ethos-u55-256"  # it extends ethos-u55-128, found inside the wheel too
