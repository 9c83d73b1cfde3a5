"""The second hardening round (issue 35): each case a user hit from outside, as a regression test. Every
bad input ends in one clear line and a non-zero exit, no output replaces a file the run reads, and no
figure that cannot fail is reported as a result."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fxrewrite
import zoo
from fxrewrite.frontend.archives import check_intact
from fxrewrite.ship.ethos_u_toolchain import ethos_u_installed
from fxrewrite.target.compilers import ACCELERATORS

ZOO = str(Path(zoo.__file__))
SMALL = ("--input-shape", "1,3,16,16")
TINY_SOURCE = "import torch\nfrom torch import nn\n\ndef seq():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n" \
              "\ndef data():\n    return torch.randn(12, 3, 16, 16)\n"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def _one_line(code: int, err: str, message: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert err.count("\n") == 1 and err.startswith("fxrewrite: error: "), err
    assert message in err, err


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch) -> Path:
    """A model file `tiny.py` (seq, and calibration inputs `data`) in the working folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(TINY_SOURCE)
    return tmp_path / "tiny.py"


# --- no output replaces a file the run reads ---------------------------------------------------------------


def test_a_report_onto_the_models_source_file_is_refused(tiny, run_cli):
    before = _snapshot(tiny.parent)
    code, _, err = run_cli("lower", "tiny.py:seq", "-t", "npu-generic", *SMALL, "-o", "r.pt2", "--report", "tiny.py")
    _one_line(code, err, "--report tiny.py would overwrite the input tiny.py")
    assert _snapshot(tiny.parent) == before


def test_a_report_onto_the_calibration_callables_source_is_refused(tiny, run_cli):
    (tiny.parent / "calibsrc.py").write_text(TINY_SOURCE)
    before = _snapshot(tiny.parent)
    code, _, err = run_cli("lower", f"{ZOO}:legal_on_archnet", "-t", "archnet", *SMALL, "--calib", "calibsrc.py:data",
                           "-o", "r.pt2", "--report", "calibsrc.py")
    _one_line(code, err, "would overwrite the input calibsrc.py")
    assert _snapshot(tiny.parent) == before


def test_a_report_onto_the_target_file_is_refused(tiny, run_cli):
    (tiny.parent / "mytarget.toml").write_bytes((Path(__file__).parents[1] / "targets" / "npu-generic.toml").read_bytes())
    before = _snapshot(tiny.parent)
    code, _, err = run_cli("lower", "tiny.py:seq", "-t", "mytarget.toml", *SMALL, "-o", "r.pt2",
                           "--report", "mytarget.toml")
    _one_line(code, err, "would overwrite the input mytarget.toml")
    assert _snapshot(tiny.parent) == before


def test_a_report_onto_a_file_the_target_extends_is_refused(tiny, run_cli):
    (tiny.parent / "base.toml").write_bytes((Path(__file__).parents[1] / "targets" / "npu-generic.toml").read_bytes())
    (tiny.parent / "variant.toml").write_text('[target]\nextends = "base.toml"\nname = "variant"\n')
    before = _snapshot(tiny.parent)
    code, _, err = run_cli("lower", "tiny.py:seq", "-t", "variant.toml", *SMALL, "-o", "r.pt2", "--report", "base.toml")
    _one_line(code, err, "would overwrite the input")
    assert _snapshot(tiny.parent) == before


def test_a_report_onto_a_modules_source_named_as_a_package_is_refused(tiny, run_cli, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny.parent))
    code, _, err = run_cli("lower", "tiny:seq", "-t", "npu-generic", *SMALL, "-o", "r.pt2", "--report", "tiny.py")
    _one_line(code, err, "would overwrite the input")


def test_output_folders_may_hold_no_input(tiny, run_cli):
    """The checkpoint folder OUT.ckpt/ is removed when a run ends, and --dump-ir writes into its folder."""
    (tiny.parent / "o.ckpt").mkdir()
    np.save(tiny.parent / "o.ckpt" / "calib.npy", np.zeros((8, 3, 16, 16), np.float32))
    before = _snapshot(tiny.parent)
    code, _, err = run_cli("lower", "tiny.py:seq", "-t", "archnet", *SMALL, "--calib", "o.ckpt/calib.npy",
                           "-o", "o.pt2")
    _one_line(code, err, "holds the input o.ckpt/calib.npy")
    code, _, err = run_cli("lower", "tiny.py:seq", "-t", "npu-generic", *SMALL, "--dump-ir", ".", "-o", "o.pt2")
    _one_line(code, err, "--dump-ir . holds the input tiny.py")
    assert _snapshot(tiny.parent) == before


def test_an_output_inside_a_calibration_image_folder_is_refused(tiny, run_cli):
    (tiny.parent / "images").mkdir()
    code, _, err = run_cli("lower", "tiny.py:seq", "-t", "archnet", *SMALL, "--calib", "images",
                           "-o", "o.pt2", "--report", "images/r.json")
    _one_line(code, err, "lies in the input folder images")


def test_a_picture_through_a_link_to_the_model_is_refused(tiny, run_cli):
    os.symlink("tiny.py", tiny.parent / "m.svg")
    code, _, err = run_cli("viz", "tiny.py:seq", *SMALL, "-o", "m.svg")
    _one_line(code, err, "would overwrite the input tiny.py")
    assert tiny.read_text() == TINY_SOURCE


def test_an_output_that_is_a_link_writes_the_file_it_points_to_and_says_so(tiny, run_cli):
    os.symlink("real.pt2", tiny.parent / "link.pt2")
    code, out, err = run_cli("lower", "tiny.py:seq", "-t", "npu-generic", *SMALL, "-o", "link.pt2")
    assert code == 0, err
    assert (tiny.parent / "link.pt2").is_symlink() and (tiny.parent / "real.pt2").is_file()
    assert f"link.pt2 is a link: wrote the file it points to, {tiny.parent / 'real.pt2'}" in out


def test_an_output_through_a_loop_of_links_is_refused(tiny, run_cli):
    os.symlink("b.pt2", tiny.parent / "a.pt2")
    os.symlink("a.pt2", tiny.parent / "b.pt2")
    for output in (["-o", "a.pt2"], ["-o", "r.pt2", "--report", "a.pt2"]):
        code, _, err = run_cli("lower", "tiny.py:seq", "-t", "npu-generic", *SMALL, *output)
        _one_line(code, err, "a.pt2: symbolic links that lead in a loop")


def test_a_finished_run_removes_its_checkpoint_and_nothing_else(tiny, run_cli):
    """The checkpoint folder was removed whole (a file put there with it), and a link to a folder crashed it."""
    (tiny.parent / "elsewhere").mkdir()
    os.symlink("elsewhere", tiny.parent / "o.ckpt")
    (tiny.parent / "elsewhere" / "notes.txt").write_text("mine")
    code, _, err = run_cli("lower", f"{ZOO}:tiny_cnn", "-t", "archnet", *SMALL, "--calib", "synthetic", "--calib-size",
                           "16", "--epochs", "1", "--finetune-epochs", "1", "-o", "o.pt2")
    assert code == 0, err
    assert (tiny.parent / "o.ckpt").is_symlink() and os.listdir(tiny.parent / "elsewhere") == ["notes.txt"]


# --- exit 3 and tracebacks ---------------------------------------------------------------------------------


def _scripted(tmp_path: Path, module: nn.Module, name: str) -> Path:
    torch.jit.save(torch.jit.script(module.eval()), str(tmp_path / name))
    return tmp_path / name


class ConvBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.fc = nn.Embedding(10, 16), nn.Linear(16, 4)

    def forward(self, tokens):
        return self.fc(self.embedding(tokens)).mean(1)


@pytest.mark.skipif(not ethos_u_installed(), reason="needs the ethos-u extra")
@pytest.mark.parametrize("module, shape", [(ConvBatchNorm(), "1,3,16,16"), (Tokens(), "1,8:int64")],
                         ids=["conv-batch-norm", "tokens"])
def test_vela_compiles_torchscript_archives_as_it_compiles_their_python(module, shape, tmp_path, run_cli):
    """The converter kept the archive's parameters as buffers: ExecuTorch's quantizer failed on them
    ("attribute 'weight' already exists", a symbolic size `s82` in its graph)."""
    archive = _scripted(tmp_path, module, "ts.pt")
    code, out, err = run_cli("check", str(archive), "-t", "ethos-u55-128", "--input-shape", shape, "--vela")
    assert code in (0, 1) and not err, err
    assert "teacher:" in out and "cycles" in out


def test_an_empty_npy_calibration_file_is_one_line(tmp_path, run_cli):
    (tmp_path / "empty.npy").write_bytes(b"")
    code, _, err = run_cli("lower", f"{ZOO}:legal_on_archnet", "-t", "archnet", *SMALL, "--calib",
                           str(tmp_path / "empty.npy"), "-o", str(tmp_path / "o.pt2"))
    _one_line(code, err, "not a readable .npy array")


@pytest.mark.parametrize("values", [np.zeros((8, 3, 16, 16), np.complex64), np.array([["a"] * 4] * 8)],
                         ids=["complex", "text"])
def test_calibration_values_that_are_not_real_numbers_are_refused(values, tmp_path, run_cli):
    np.save(tmp_path / "c.npy", values)
    code, _, err = run_cli("lower", f"{ZOO}:legal_on_archnet", "-t", "archnet", *SMALL, "--calib",
                           str(tmp_path / "c.npy"), "-o", str(tmp_path / "o.pt2"))
    _one_line(code, err, "inputs are real numbers")


def test_an_interrupt_after_the_work_prints_nothing():
    """A SIGINT right after "wrote" printed `Exception ignored ... KeyboardInterrupt` from a finaliser."""
    script = ("import os, signal, sys\nfrom fxrewrite.entry import main\ncode = main(['passes'])\n"
              "os.kill(os.getpid(), signal.SIGINT)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# --- dead ends and silent acceptance -----------------------------------------------------------------------


def test_export_takes_the_trust_pickle_its_advice_names(tmp_path, run_cli):
    model = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(nn.ReLU(), (torch.randn(1, 3),)), model)
    code, _, err = run_cli("export", str(model), "-o", str(tmp_path / "m.onnx"), "--trust-pickle")
    assert code == 0, err


def test_debug_before_the_command_shows_the_traceback(run_cli):
    code, _, err = run_cli("--debug", "check", "nothing_here.py:model", "-t", "archnet")
    assert code == 2 and "Traceback" in err and "no such file nothing_here.py" in err


def test_a_target_naming_an_accelerator_vela_lacks_is_refused_on_load(tmp_path, run_cli):
    text = (Path(__file__).parents[1] / "targets" / "ethos-u55-128.toml").read_text()
    (tmp_path / "t.toml").write_text(text.replace('compiler = "vela"\naccelerator = "ethos-u55-128"',
                                                  'vela_accelerator = "ethos-u99-7"'))
    code, _, err = run_cli("check", f"{ZOO}:tiny_cnn", "-t", str(tmp_path / "t.toml"), *SMALL)
    _one_line(code, err, "'ethos-u99-7' is not an accelerator Vela compiles for")


@pytest.mark.skipif(not ethos_u_installed(), reason="needs the ethos-u extra")
def test_the_accelerators_known_without_vela_are_vela_s():
    from ethosu.vela.architecture_features import Accelerator

    assert set(ACCELERATORS["vela"]) == {a.value for a in Accelerator}


@pytest.mark.parametrize("option", [("--accuracy-budget", "1"), ("--epochs", "3"), ("--augment",),
                                    ("--device", "cuda")])
def test_options_of_the_calib_group_without_calib_are_refused(option, tmp_path, run_cli):
    code, _, err = run_cli("lower", f"{ZOO}:legal_on_archnet", "-t", "archnet", *SMALL, *option,
                           "-o", str(tmp_path / "o.pt2"))
    _one_line(code, err, f"{option[0]} needs calibration data")
    assert list(tmp_path.iterdir()) == []


def _damaged(archive: Path) -> Path:
    """A copy of `archive` with one byte of its first tensor's data flipped (its CRC then fails)."""
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        member = next(i for i in zipped.infolist() if "/data/0" in i.filename)
    name_length, extra_length = struct.unpack("<HH", raw[member.header_offset + 26:member.header_offset + 30])
    raw[member.header_offset + 30 + name_length + extra_length + 5] ^= 0xFF
    damaged = archive.with_name("damaged.pt")
    damaged.write_bytes(raw)
    return damaged


def test_a_torchscript_archive_with_a_damaged_weight_is_refused(tmp_path, run_cli):
    archive = _damaged(_scripted(tmp_path, ConvBatchNorm(), "ts.pt"))
    code, _, err = run_cli("check", str(archive), "-t", "npu-generic", *SMALL)
    _one_line(code, err, "fails its CRC check")
    check_intact(tmp_path / "ts.pt", "MODEL")  # the intact archive passes


def test_a_wrong_input_shape_on_a_torchscript_archive_is_said_as_such(tmp_path, run_cli):
    archive = _scripted(tmp_path, ConvBatchNorm(), "ts.pt")
    code, _, err = run_cli("check", str(archive), "-t", "npu-generic", "--input-shape", "1,5,16,16")
    _one_line(code, err, "the model fails on example inputs of shape 1x5x16x16: RuntimeError: Given groups=1")
    assert "torch.export.save instead" not in err


# --- a number that can mean nothing ------------------------------------------------------------------------


class OneClass(nn.Module):
    """A conv network whose head's bias outweighs its inputs: class 0 for every input."""

    def __init__(self):
        super().__init__()
        self.features = zoo.TinyCNN().features
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            self.head.bias[0] = 100.0

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def one_class() -> nn.Module:
    return OneClass()


def test_a_teacher_of_one_class_reports_no_agreement(tmp_path, run_cli):
    report = tmp_path / "r.json"
    code, out, err = run_cli("lower", f"{__file__}:one_class", "-t", "archnet", *SMALL, "--calib", "synthetic",
                             "--calib-size", "40", "--epochs", "1", "--finetune-epochs", "1", "-o",
                             str(tmp_path / "o.pt2"), "--report", str(report))
    assert code == 0, err
    document = json.loads(report.read_text())["distillation"]
    assert "top1_agreement" not in document
    assert document["no_class_information"].startswith("the teacher gives class 0 for every one of the 8 inputs")
    assert "top-1 agreement" not in out.replace("no top-1 agreement", "")
    assert "no top-1 agreement: the teacher gives class 0" in out


def test_restructuring_a_one_class_teacher_spends_its_budget_on_what_varies(tmp_path, run_cli):
    """With one class for every input, agreement was 100% for any replacement: at a budget of 1e-300 points
    the planner took a block whose held-out error was 0.421."""
    report = tmp_path / "r.json"
    code, out, err = run_cli("lower", f"{Path(__file__).with_name('test_restructure.py')}:TinyMobileNet", "-t",
                             "ethos-u55-128", "--input-shape", "1,3,13,13", "--calib", "synthetic", "--calib-size", "60",
                             "--accuracy-budget", "1e-300", "-o", str(tmp_path / "m.pt2"), "--report", str(report))
    assert code == 0, err
    document = json.loads(report.read_text())["restructuring"]
    assert document["no_class_information"].startswith("the teacher gives class")
    assert document["measure"] == "cosine of the outputs' deviations from the teacher's mean"
    assert not any(block["chosen"] for block in document["blocks"])
    assert "no top-1 agreement" in out


# --- the Python API ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda m, x: fxrewrite.lower(m, (x,), target=None), "target is needed"),
    (lambda m, x: fxrewrite.check(m, None, (x,)), "target is needed"),
    (lambda m, x: fxrewrite.lower(f"{ZOO}:tiny_cnn", input_shapes=123), "input_shapes must be a list"),
    (lambda m, x: fxrewrite.lower(f"{ZOO}:tiny_cnn", input_shapes=[1.5]), "input_shapes: 1.5 is not a shape"),
    (lambda m, x: fxrewrite.lower(m, (x,), passes=123), "passes must be None"),
    (lambda m, x: fxrewrite.lower(m, (x,), epochs=3), "lower() got epochs without calib"),
    (lambda m, x: fxrewrite.lower(m, (x,), instruments=5), "instruments must be"),
    (lambda m, x: fxrewrite.draw(m, 123, example_inputs=(x,)), "path must be the picture's file"),
    (lambda m, x: fxrewrite.load_and_capture(5), "spec must name a MODEL"),
], ids=["lower-target-none", "check-target-none", "input-shapes-int", "input-shapes-float", "passes-int",
        "epochs-without-calib", "instruments-int", "draw-path-int", "load-spec-int"])
def test_the_api_names_the_argument_it_cannot_use(call, message):
    with pytest.raises(fxrewrite.FxrewriteError) as raised:
        call(zoo.TinyCNN().eval(), torch.randn(1, 3, 16, 16))
    assert message in str(raised.value)


def test_the_api_takes_shapes_as_tuples_of_whole_numbers():
    lowered = fxrewrite.lower(f"{ZOO}:legal_on_archnet", target="archnet", input_shapes=[(1, 3, 16, 16)])
    assert lowered.legal and lowered.example_inputs[0].shape == (1, 3, 16, 16)

