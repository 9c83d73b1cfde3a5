"""`--vela`: the teacher and the lowered graph compiled by ExecuTorch's Arm backend and Vela for the
target's Ethos-U accelerator. The compiling tests need the ethos-u extra (`make test` installs it)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal

import pytest
import torch
from torch import nn

import zoo
from fxrewrite.ir import annotate_shapes
from fxrewrite.ship.ethos_u import VelaLayer
from fxrewrite.ship.vela_layers import named_after_nodes

MODEL = f"{zoo.__file__}:tiny_cnn"
SMALL = ("--input-shape", "1,3,16,16")


def test_without_the_extra_vela_is_one_line_saying_what_to_install(run_cli, monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else find_spec(name, *a))
    for command in (("check", MODEL, "-t", "ethos-u55-128", "--vela", *SMALL),
                    ("lower", MODEL, "-t", "ethos-u55-128", "--vela", *SMALL, "-o", str(tmp_path / "m.pt2"))):
        code, _, stderr = run_cli(*command)
        assert code == 2 and stderr.strip() == (
            "fxrewrite: error: --vela compiles through ExecuTorch's Arm backend and Vela, which are not installed: "
            "pip install 'fxrewrite[ethos-u]' (executorch[ethos-u]==1.5.1, which brings Vela)")
    code, _, stderr = run_cli("lower", MODEL, "-t", "ethos-u55-128", *SMALL, "-o", str(tmp_path / "m.pte"))
    assert code == 2 and f"-o {tmp_path / 'm.pte'} compiles through ExecuTorch's Arm backend" in stderr
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_vela_on_a_target_without_an_accelerator_names_the_ethos_u_targets(run_cli, tmp_path):
    code, _, stderr = run_cli("check", MODEL, "-t", "archnet", "--vela", *SMALL)
    assert code == 2 and "--vela: target archnet names no Vela accelerator" in stderr and "are ethos-u55-128, ethos-u55-256, ethos-u65-256, ethos-u65-512, ethos-u85-256" in stderr
    code, _, stderr = run_cli("lower", MODEL, "-t", "archnet", *SMALL, "-o", str(tmp_path / "m.pte"))
    assert code == 2 and "m.pte: target archnet names no Vela accelerator" in stderr


class TopK(zoo.TinyCNN):
    """TinyCNN's logits through topk, which the Ethos-U flow leaves on the CPU."""

    def forward(self, x):
        return torch.topk(super().forward(x), 2).values


def top_k():
    return TopK()


def test_check_reports_vela_cycles_memory_and_the_ops_left_on_the_cpu_with_the_reason(run_cli):
    pytest.importorskip("executorch")
    code, stdout, stderr = run_cli("check", f"{__file__}:top_k", "-t", "ethos-u55-128", "--vela", "--json", *SMALL)
    assert code == 1, stderr  # topk is no op of the target's
    teacher = json.loads(stdout)["vela"]["teacher"]
    assert teacher["accelerator"] == "ethos-u55-128" and teacher["memory_mode"] == "Shared_Sram"
    assert teacher["cycles_total"] >= teacher["cycles_npu"] > 0 and teacher["inference_ms"] > 0
    assert [(op["op"], op["count"]) for op in teacher["cpu_ops"]] == [("topk", 1)]
    assert "TOSA" in teacher["cpu_ops"][0]["reason"]  # the partitioner's own words
    # the CPU's share, estimated: topk's kernel and the int8 conversions around it and at the boundary
    assert teacher["cpu_ops"][0]["elements"] > 0 and teacher["cpu_cycles"] > teacher["cpu_ops"][0]["cycles"] > 0
    assert teacher["program_cycles"] == teacher["cycles_total"] + teacher["cpu_cycles"]
    assert {layer["operator"] for layer in teacher["layers"]} >= {"Conv2D"}


def test_lower_writes_the_executorch_program_and_reports_vela_for_teacher_and_lowered_graph(run_cli, tmp_path):
    pytest.importorskip("executorch")
    report, program = tmp_path / "r.json", tmp_path / "m.pte"
    code, stdout, stderr = run_cli("lower", MODEL, "-t", "ethos-u55-128", "--vela", *SMALL, "-o", str(program),
                                   "--report", str(report))
    assert code == 0, stderr
    vela = json.loads(report.read_text())["vela"]
    assert set(vela) == {"teacher", "lowered"}
    assert all(v["cpu_ops"] == [] and v["cycles_total"] > 0 and v["delegates"] == 1 for v in vela.values())
    assert "lowered: " in stdout and "the teacher's NPU cycles, x" in stdout and "its whole program)" in stdout
    assert program.read_bytes()[4:6] == b"ET"  # an ExecuTorch flatbuffer (file identifier ET12)


class SplitByTheCpu(nn.Module):
    """Two convs with relu6 between, which ExecuTorch 1.5.1 leaves on the CPU without a batch norm
    (tests/test_ethos_u_ops.py), so the NPU gets two delegated subgraphs."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.second(nn.functional.relu6(self.first(x)))


def test_a_graph_cut_in_several_delegates_counts_every_one():
    """Vela writes each delegate's CSVs to one folder: the last overwrote the others."""
    pytest.importorskip("executorch")
    from fxrewrite.ship.ethos_u import compile_for_ethos_u

    x = torch.randn(1, 3, 16, 16)
    result = compile_for_ethos_u(annotate_shapes(torch.fx.symbolic_trace(SplitByTheCpu().eval()), (x,)), (x,),
                                 "ethos-u55-128")
    assert result.delegates == 2 and [op.op for op in result.cpu_ops] == ["hardtanh"]
    convs = [layer for layer in result.layers if layer.operator == "Conv2D"]
    assert len(convs) == 2 and result.cycles_npu >= sum(layer.cycles for layer in convs) > 0
    assert [layer.node for layer in convs] == ["first", "second"]  # Vela's rows traced back to the graph
    assert "; most cycles: first (Conv2D) " in result.describe()


def _layer(operator: str, macs: int) -> VelaLayer:
    return VelaLayer(f"tosa_{operator.lower()}", operator, cycles=100, macs=macs, utilisation=1.0)


def test_vela_layers_are_named_after_the_node_with_their_mac_count_in_execution_order():
    class TwoEqualConvsAndALinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(self.b(torch.relu(self.a(x))).flatten(1))

    gm = annotate_shapes(torch.fx.symbolic_trace(TwoEqualConvsAndALinear()), (torch.randn(1, 4, 8, 8),))
    conv_macs, fc_macs = 8 * 8 * 4 * 4 * 9, 4 * 8 * 8 * 10
    rows = [_layer("Transpose", 0), _layer("Conv2D", conv_macs), _layer("MaxPool", conv_macs),
            _layer("Conv2D", conv_macs), _layer("Conv2D", 77), _layer("FullyConnected", fc_macs)]
    named = named_after_nodes(rows, gm)
    # equal counts go in order; a pooling row never takes a conv's name; no node has 77 MACs
    assert [layer.node for layer in named] == [None, "a", None, "b", None, "fc"]


def test_the_quantization_check_compares_the_int8_graph_with_the_float_one_on_held_out_inputs():
    from fxrewrite.ship.ethos_u import _quantization_check

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    held = [(torch.randn(1, 4),) for _ in range(50)]
    same = _quantization_check(model, model, 200, held)
    assert (same.calibration_inputs, same.held_out_inputs, same.top1_agreement, same.relative_error) == (200, 50, 1.0, 0.0)
    flipped = _quantization_check(model, lambda x: -model(x), 200, held)
    assert flipped.top1_agreement < 0.5 and flipped.relative_error == pytest.approx(2.0)
    assert _quantization_check(model, model, 200, []) is None


def test_a_pte_is_quantized_on_the_calibration_inputs_and_judged_on_their_held_out_fifth(run_cli, tmp_path):
    pytest.importorskip("executorch")
    report, program = tmp_path / "r.json", tmp_path / "m.pte"
    code, stdout, stderr = run_cli("lower", MODEL, "-t", "ethos-u55-128", *SMALL, "--calib", "synthetic",
                                   "--calib-size", "20", "-o", str(program), "--report", str(report))
    assert code == 0, stderr
    quantization = json.loads(report.read_text())["vela"]["lowered"]["quantization"]
    assert (quantization["calibration_inputs"], quantization["held_out_inputs"]) == (16, 4)
    # a random tiny_cnn gives one class for the 4 held-out inputs: agreement would be vacuous, the error judges
    assert quantization["top1_agreement"] is None and 0 <= quantization["relative_error"] < 0.5
    assert quantization["no_class_information"].startswith("the teacher gives class")
    assert "held-out inputs: L2 relative error" in stdout and "(no top-1 agreement: " in stdout and program.is_file()


def test_the_int8_quantizer_calibrates_on_at_most_256_inputs_and_is_judged_on_at_most_500():
    """Its observers take each input alone: all of 6,400 calibration images held one compile for hours."""
    from fxrewrite.cli.vela import VelaRuns
    from fxrewrite.quant import CalibrationData

    runs = VelaRuns(None)
    runs.calibrate_on(CalibrationData(tuple(torch.randn(700, 3, 4, 4).split(64)), tuple(torch.randn(600, 3, 4, 4).split(64)),
                                      "random"))
    assert (len(runs.calibration), len(runs.held_out)) == (256, 500)
    assert all(inputs[0].shape == (1, 3, 4, 4) for inputs in runs.calibration + runs.held_out)


def test_vela_block_cycles_compile_each_signature_once():
    pytest.importorskip("executorch")
    from fxrewrite.ship.vela_cost import VelaBlockCycles

    measure = VelaBlockCycles("ethos-u55-128")
    conv, sample = nn.Conv2d(8, 8, 3, padding=1), torch.randn(1, 8, 8, 8)
    first = measure(conv, sample, ("conv", 8))
    assert first > 0 and measure(nn.Conv2d(8, 8, 3, padding=1), sample, ("conv", 8)) == first
    assert len(measure.cache) == 1 and measure.describe() == "Vela on ethos-u55-128 (1 blocks compiled)"


def _dies(*_: object, **__: object) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_vela_that_dies_is_one_clear_error_not_a_crash():
    """Vela's C++ core segfaults on swin_t's graph at 224x224 (U55-128); the compile runs in a child."""
    from fxrewrite.errors import VelaError
    from fxrewrite.ship.ethos_u import _in_a_child_process

    assert _in_a_child_process(max, 3, 7) == 7
    with pytest.raises(VelaError, match="Vela crashed"):
        _in_a_child_process(_dies, b"tosa", [])


def test_a_graph_the_toolchain_cannot_compile_is_reported_and_the_other_still_compiled():
    from fxrewrite.cli.vela import VelaRuns
    from fxrewrite.errors import VelaError

    class Refusing:
        def compile(self, module, inputs, accelerator, calibration, held_out=()):
            raise VelaError("Vela crashed")

    runs = VelaRuns(Refusing(), "ethos-u55-128")
    runs.add("teacher", nn.Identity(), (torch.zeros(1),))
    assert runs.failed == {"teacher": "Vela crashed"} and runs.numbers() == {"teacher": {"error": "Vela crashed"}}
    assert "teacher: not compiled: Vela crashed" in runs.text()
