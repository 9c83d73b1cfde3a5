"""The command line: output, exit codes, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import graphviz
import numpy as np
import pytest
import torch

import fxrewrite.viz as viz
from fxrewrite.api import load_and_capture

import zoo

ZOO = str(Path(zoo.__file__))
SMALL = ("--input-shape", "1,3,16,16")


def test_check_lists_each_node_with_its_verdict_and_exits_1_when_illegal(run_cli):
    code, out, err = run_cli("check", f"{ZOO}:tiny_cnn", "--target", "archnet", *SMALL)
    assert code == 1, err
    assert "ILLEGAL: conv2d kernel 7x7 not in allowed kernels {3x3}" in out
    assert "ILLEGAL: mean is not supported by target archnet" in out
    assert "features_0" in out and "legal" in out
    assert "on archnet: 10 nodes, 2 illegal\nestimated: " in out
    assert "cycles (" in out and "dearest nodes: " in out


def test_check_exits_0_when_every_node_is_legal(run_cli):
    code, out, _ = run_cli("check", f"{ZOO}:legal_on_archnet", "--target", "archnet", *SMALL)
    assert code == 0
    assert "every node is legal" in out


def test_check_json(run_cli):
    code, out, _ = run_cli("check", f"{ZOO}:tiny_cnn", "--target", "npu-generic", "--json", *SMALL)
    report = json.loads(out)
    assert code == 1
    assert report["version"] == 3 and report["target"] == "npu-generic"
    assert report["estimate"]["cycles"] > 0 and len(report["estimate"]["dearest"]) <= 10
    assert report["summary"] == {"nodes": 10, "legal": 7, "illegal": 3}
    conv7 = next(n for n in report["nodes"] if n["name"] == "features_4")
    assert conv7["kind"] == "conv2d" and conv7["verdict"] == "illegal"
    assert conv7["reason"] == "conv2d kernel 7x7 not in allowed kernels {1x1, 3x3}; conv2d padding 3x3 exceeds the limit 1"
    assert report["counts"]["batch_norm"] == {"legal": 0, "illegal": 1}


def test_targets_list_and_report(run_cli):
    code, out, _ = run_cli("targets")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "archnet", "archnet-transformer", "cpu-reference", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
        "ethos-u65-512", "ethos-u85-256", "npu-generic"]
    code, out, _ = run_cli("targets", "archnet")
    assert code == 0
    assert "conv2d      kernel in {3x3}; stride in {1, 2}" in out
    assert "weights: int2, int4, int8" in out


def test_viz_draws_an_svg_coloured_by_verdict(tmp_path, run_cli):
    code, out, err = run_cli("viz", f"{ZOO}:tiny_cnn", "--target", "archnet", "-o", str(tmp_path / "g.svg"), *SMALL)
    assert code == 0, err
    svg = (tmp_path / "g.svg").read_text()
    assert svg.startswith("<?xml") and "conv2d kernel 7x7 not in allowed" in svg
    assert "#ffcdd2" in svg and "#c8e6c9" in svg
    assert "1x16x8x8" in svg, "tensor shapes label the edges"


def test_viz_groups_nodes_by_module():
    gm = load_and_capture(f"{ZOO}:tiny_cnn", input_shapes=["1,3,16,16"])
    source = viz.to_dot(gm).source
    assert "subgraph cluster_features" in source


def test_viz_without_dot_writes_the_dot_text_and_says_so(tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    code, out, err = run_cli("viz", f"{ZOO}:tiny_cnn", "-o", str(tmp_path / "g.svg"), *SMALL)
    assert code == 0
    assert not (tmp_path / "g.svg").exists()
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert "`dot` program is not installed" in err and "apt-get install -y graphviz" in err


def test_a_failed_drawing_leaves_no_file_behind(tmp_path, monkeypatch):
    gm = load_and_capture(f"{ZOO}:tiny_cnn", input_shapes=["1,3,16,16"])

    def broken_pipe(self, *args, **kwargs):
        raise graphviz.CalledProcessError(1, "dot")

    monkeypatch.setattr(graphviz.Digraph, "pipe", broken_pipe)
    with pytest.raises(graphviz.CalledProcessError):
        viz.render(gm, tmp_path / "g.svg")
    assert list(tmp_path.iterdir()) == []


def _pickled(tmp_path):
    torch.save(zoo.TinyCNN(), tmp_path / "m.pt")
    return str(tmp_path / "m.pt")


def _corrupt(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 truncated")
    return str(tmp_path / "bad.pt2")


def _bad_target(tmp_path):
    (tmp_path / "t.toml").write_text('[target]\nname = "t"\n[ops.conv2d]\nkernels = "3x3"\n')
    return str(tmp_path / "t.toml")


def _npy(tmp_path, shape):
    np.save(tmp_path / "calib.npy", np.zeros(shape, np.float32))
    return str(tmp_path / "calib.npy")


BAD_INPUTS = {
    "missing file": (lambda p: ["check", "nowhere/model.pt2", "-t", "archnet"], "no such file"),
    "corrupt file": (lambda p: ["check", _corrupt(p), "-t", "archnet"], "not a valid .pt2 archive"),
    "pickle without --trust-pickle": (lambda p: ["check", _pickled(p), "-t", "archnet", *SMALL], "--trust-pickle"),
    "pkg:callable that does not exist": (lambda p: ["check", "torchvision.models:resnet_nineteen", "-t", "archnet"],
                                         "has no attribute"),
    "uncapturable model": (lambda p: ["check", f"{ZOO}:value_branch", "-t", "archnet", "--input-shape", "1,3"],
                           "cannot capture ValueBranch"),
    "wrong input shape": (lambda p: ["check", f"{ZOO}:tiny_cnn", "-t", "archnet", "--input-shape", "1,4,16,16"],
                          "fails on example inputs of shape 1x4x16x16"),
    "invalid target file": (lambda p: ["check", f"{ZOO}:tiny_cnn", "-t", _bad_target(p), *SMALL],
                            "quantization: missing"),
    "unknown target": (lambda p: ["check", f"{ZOO}:tiny_cnn", "-t", "tpu-v9"], "unknown target 'tpu-v9'"),
    "--wbits without --calib": (lambda p: ["lower", f"{ZOO}:tiny_cnn", "-t", "archnet", "--wbits", "4",
                                           "-o", str(p / "o.pt2"), *SMALL], "--wbits needs calibration data"),
    "bit width the target lacks": (lambda p: ["lower", f"{ZOO}:tiny_cnn", "-t", "archnet", "--wbits", "3", "--calib",
                                              "synthetic", "-o", str(p / "o.pt2"), *SMALL],
                                   "--wbits 3: target archnet declares weight formats int2, int4, int8"),
    "calibration data of another shape": (lambda p: ["lower", f"{ZOO}:gelu_head", "-t", "archnet", "--calib",
                                                     _npy(p, (4, 3, 9, 9)), "-o", str(p / "o.pt2"), *SMALL],
                                          "samples of shape (3, 9, 9), but the model takes"),
    "unknown device": (lambda p: ["lower", f"{ZOO}:tiny_cnn", "-t", "archnet", "--calib", "synthetic", "--device",
                                  "tpu", "-o", str(p / "o.pt2"), *SMALL], "--device tpu: use cpu, cuda or cuda:N"),
    "bad viz suffix": (lambda p: ["viz", f"{ZOO}:tiny_cnn", "-o", str(p / "g.jpeg"), *SMALL], "suffix must be one of"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, run_cli):
    argv, message = BAD_INPUTS[case]
    code, out, err = run_cli(*argv(tmp_path))
    assert not (tmp_path / "o.pt2").exists()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fxrewrite: error: ")
    assert message in err
    assert "Traceback" not in err + out


def test_debug_shows_the_traceback(run_cli):
    code, _, err = run_cli("check", "nowhere/model.pt2", "-t", "archnet", "--debug")
    assert code == 2 and "Traceback" in err and "LoadError" in err


def test_installed_command_runs_as_a_program(tmp_path):
    command = Path(sys.executable).with_name("fxrewrite")
    result = subprocess.run([str(command), "check", f"{ZOO}:tiny_cnn", "-t", "cpu-reference", *SMALL],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert "every node is legal" in result.stdout
    usage = subprocess.run([str(command), "check"], capture_output=True, text=True)
    assert usage.returncode == 2 and "required" in usage.stderr and "Traceback" not in usage.stderr


def test_a_reader_that_quits_early_is_no_internal_error():
    """Regression: `fxrewrite targets | head -1` ended in exit 3 on BrokenPipeError."""
    command = Path(sys.executable).with_name("fxrewrite")
    process = subprocess.Popen([str(command), "targets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the command has printed anything
    stderr = process.stderr.read().decode()
    assert process.wait() == 141, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr


def test_written_files_follow_the_umask(tmp_path):
    from fxrewrite.files import atomic_write_text

    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_lower_with_calibration_distils_quantizes_and_the_saved_program_verifies(tmp_path, run_cli):
    out, report = tmp_path / "student.pt2", tmp_path / "report.json"
    code, stdout, stderr = run_cli("lower", f"{ZOO}:gelu_head", "-t", "archnet", *SMALL, "--calib", "synthetic",
                                   "--calib-size", "40", "--epochs", "1", "--finetune-epochs", "1", "--wbits", "4",
                                   "--abits", "4", "-o", str(out), "--report", str(report))
    assert code == 0, stderr
    assert "every node is legal on archnet" in stdout and ": MlpStudent" in stdout
    document = json.loads(report.read_text())
    distilled = document["distillation"]
    assert distilled["quantization"] == "lsq: weights int4 per-channel, activations uint4 per-tensor"
    assert distilled["samples"] == {"train": 32, "held_out": 8, "dropped": 0} and distilled["regions"][0]["cosine"] <= 1
    assert set(distilled["seconds"]) == {"teacher", "blockwise", "finetune", "report"}
    assert distilled["processes"] == 1 and distilled["device"] == "cpu"
    assert not (tmp_path / "student.ckpt").exists()  # a finished run leaves nothing to resume
    code, stdout, _ = run_cli("check", str(out), "-t", "archnet")
    assert code == 0 and "fake_quant" in stdout
    code, stdout, _ = run_cli("check", str(out), "-t", "npu-generic")
    assert code == 1 and "weights format int4 not in {int8} (declared by npu-generic)" in stdout


def test_lower_without_calibration_says_how_to_distil_what_stays_illegal(tmp_path, run_cli):
    code, _, stderr = run_cli("lower", f"{ZOO}:gelu_head", "-t", "npu-generic", *SMALL, "-o", str(tmp_path / "o.pt2"))
    assert code == 1 and "pass --calib with a folder of images" in stderr


def test_an_exact_lowering_with_bit_widths_gets_post_training_calibration(tmp_path, run_cli):
    report = tmp_path / "r.json"
    code, stdout, stderr = run_cli("lower", f"{ZOO}:legal_on_archnet", "-t", "archnet", *SMALL, "--calib", "synthetic",
                                   "--calib-size", "20", "--wbits", "8", "--abits", "8", "-o", str(tmp_path / "q.pt2"),
                                   "--report", str(report))
    assert code == 0, stderr
    distilled = json.loads(report.read_text())["distillation"]
    assert distilled["schedule"] == "post-training calibration" and distilled["regions"] == []
    assert distilled["held_out_cosine"] > 0.99  # 8-bit calibration of one conv
    code, stdout, _ = run_cli("check", str(tmp_path / "q.pt2"), "-t", "archnet")
    assert code == 0 and "fake_quant" in stdout
