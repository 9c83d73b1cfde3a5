"""The wheel carries the core, the passes and the target files, and targets load from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_targets_are_found_from_an_installed_wheel(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("fxrewrite-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fxrewrite/targets/archnet.toml" in names
    assert "fxrewrite/passes/__init__.py" in names
    assert "fxrewrite/cli.py" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import fxrewrite, fxrewrite.target as t; "
             "print(fxrewrite.__file__); print(t.builtin_targets()); print(t.Target.load('ethos-u55-128').name)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(site)}, check=True)
    location, listed, loaded = result.stdout.splitlines()
    assert location.startswith(str(site)), "the wheel's copy must be imported, not the source tree"
    assert listed == "['archnet', 'archnet-transformer', 'cpu-reference', 'ethos-u55-128', 'ethos-u55-256', 'ethos-u85-256', 'npu-generic']"
    assert loaded == "ethos-u55-128"
