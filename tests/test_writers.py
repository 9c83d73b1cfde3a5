"""Output writers by suffix: every file of fxrewrite/writers is registered, and `Lowered.save` writes
what `lower -o` writes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import fxrewrite
import zoo
from fxrewrite.frontend import load_model
from fxrewrite.writers import WRITERS, writer_for

FOLDER = Path(fxrewrite.__file__).parent / "writers"
SHARED = {"__init__", "base"}


def test_every_writer_file_is_registered_under_its_suffix():
    files = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem not in SHARED)
    registered = [importlib.import_module(f"fxrewrite.writers.{name}").WRITER for name in files]
    assert sorted(w.suffix for w in registered) == sorted(WRITERS) and all(WRITERS[w.suffix] is w for w in registered)


def test_an_unknown_suffix_names_the_formats(run_cli, tmp_path):
    code, _, err = run_cli("lower", f"{zoo.__file__}:legal_on_archnet", "-t", "archnet", "--input-shape", "1,3,8,8",
                           "-o", str(tmp_path / "m.tflite"))
    assert code == 2 and "fxrewrite writes .pt2, .onnx, .pte files, chosen by the suffix" in err
    with pytest.raises(fxrewrite.FxrewriteError, match="path .*m.xyz: fxrewrite writes"):
        writer_for(tmp_path / "m.xyz", "path")


@pytest.fixture(scope="module")
def lowered():
    return fxrewrite.lower(zoo.LegalOnArchnet().eval(), (torch.randn(1, 3, 8, 8),), target="archnet")


def test_lowered_save_writes_a_pt2_that_loads_with_its_target(lowered, tmp_path):
    written = lowered.save(tmp_path / "m.pt2")
    loaded = load_model(str(written.path))
    assert loaded.target == "archnet"
    x = torch.randn(2, 3, 8, 8)  # the batch stays free
    torch.testing.assert_close(loaded.module(x), lowered.gm(x))


def test_lowered_save_writes_onnx_checked_by_onnxruntime(lowered, tmp_path):
    pytest.importorskip("onnxruntime")
    written = lowered.save(tmp_path / "m.onnx")
    assert written.path.is_file() and written.onnx is not None and written.onnx.max_relative_error < 1e-5


def test_lowered_save_refuses_what_it_cannot_write(lowered, tmp_path):
    with pytest.raises(fxrewrite.FxrewriteError, match="target archnet names no Vela accelerator"):
        lowered.save(tmp_path / "m.pte")
    with pytest.raises(fxrewrite.FxrewriteError, match="path must be a file path"):
        lowered.save(3)
    assert list(tmp_path.iterdir()) == []
