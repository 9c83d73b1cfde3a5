"""Model archives as users hand them over: a crafted `.pt2` never runs its payload without
--trust-pickle, and TorchScript archives (scripted or traced) load as the program they hold."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from fxrewrite.api import load_and_capture


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _rewrite(source: Path, out: Path, replace) -> Path:
    """Copy a zip member by member, letting `replace(inner_name, data)` change any member's bytes."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            inner = item.filename.split("/", 1)[1]
            zout.writestr(item, replace(inner, zin.read(item)))
    return out


@pytest.fixture
def program(tmp_path) -> Path:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    path = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), path)
    return path


def _payload_in_sample_inputs(program: Path, marker: Path) -> Path:
    return _rewrite(program, program.with_name("evil.pt2"),
                    lambda inner, data: _pickle(((Payload(marker),), {})) if inner.startswith("data/sample_inputs/")
                    else data)


def _payload_in_weights(program: Path, marker: Path) -> Path:
    """A weight marked `use_pickle` whose bytes are the payload: torch unpickles it with weights_only=False."""
    def replace(inner: str, data: bytes) -> bytes:
        if inner == "data/weights/model_weights_config.json":
            config = json.loads(data)
            for meta in config["config"].values():
                meta["use_pickle"] = True
            return json.dumps(config).encode()
        if inner.startswith("data/weights/weight_"):
            return _pickle(Payload(marker))
        return data

    return _rewrite(program, program.with_name("evil.pt2"), replace)


@pytest.mark.parametrize("craft", [_payload_in_sample_inputs, _payload_in_weights])
@pytest.mark.parametrize("command", ["check", "lower", "export"])
def test_a_crafted_pt2_does_not_run_its_payload(craft, command, program, tmp_path, run_cli):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = craft(program, marker)
    argv = {"check": ["check", str(evil), "-t", "npu-generic"],
            "lower": ["lower", str(evil), "-t", "npu-generic", "-o", str(tmp_path / "o.pt2")],
            "export": ["export", str(evil), "-o", str(tmp_path / "o.onnx")]}[command]
    code, _, err = run_cli(*argv)
    assert code == 2 and "holds pickled Python objects beyond tensors" in err and "--trust-pickle" in err
    assert not marker.exists()


def test_a_trusted_pt2_is_read_as_torch_reads_it(program, tmp_path, run_cli):
    code, _, err = run_cli("check", str(program), "-t", "npu-generic", "--trust-pickle")
    assert code == 0, err


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.shape[1] > 2:  # control flow a script keeps and a trace specializes
            y = torch.relu(y)
        return y.mean((2, 3))


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archives_load_as_the_program_they_hold(how, tmp_path, run_cli):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 3, 12, 12)
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, (x,))
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    gm = load_and_capture(str(path), input_shapes=["1,3,12,12"])
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)
    code, out, err = run_cli("lower", str(path), "-t", "npu-generic", "--input-shape", "1,3,12,12",
                             "-o", str(tmp_path / "low.pt2"))
    assert code in (0, 1) and "Traceback" not in err
    assert "conv2d" in out and "unknown" not in out  # aten.convolution is read as the conv it is


def test_a_torchscript_archive_the_converter_cannot_read_says_so(tmp_path, run_cli):
    class Looping(nn.Module):
        def forward(self, x):
            for _ in range(int(x.sum().item()) % 3 + 1):
                x = x * 2
            return x

    path = tmp_path / "loop.pt"
    torch.jit.save(torch.jit.script(Looping()), str(path))
    code, _, err = run_cli("check", str(path), "-t", "npu-generic", "--input-shape", "1,4")
    assert code == 2 and err.count("\n") == 1 and "TorchScript" in err, err
