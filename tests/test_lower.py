"""`fxrewrite lower`: exact lowering end to end, the report, the .pt2, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import zoo
from fxrewrite.frontend import capture
from fxrewrite import lower
from conftest import chip

ZOO = str(Path(zoo.__file__))


def test_lower_to_npu_generic_is_legal_exact_and_reloadable(tmp_path, run_cli):
    out, report_path = tmp_path / "tiny.pt2", tmp_path / "report.json"
    code, stdout, stderr = run_cli("lower", f"{ZOO}:gelu_head", "-t", "npu-generic", "--input-shape", "1,3,17,19",
                                   "-o", str(out), "--report", str(report_path), "--timing")
    report = json.loads(report_path.read_text())
    # the head's GELU has no exact rewrite on npu-generic: it stays for distillation; its mean becomes convs
    assert code == 1, stderr
    assert report["rewrites"]["fold-batch-norm"] == 1 and report["rewrites"]["decompose-large-kernel"] == 1
    assert report["rewrites"]["global-avg-pool-as-convs"] == 1
    assert [row["kind"] for row in report["still_illegal"]] == ["gelu"]
    assert report["needs_distillation"] is True
    assert report["max_relative_error"] < 1e-5
    assert report["after"]["macs"] > report["before"]["macs"]
    assert "fold-batch-norm" in stdout and "need distillation" in stdout
    program = torch.export.load(out)
    x = torch.randn(1, 3, 17, 19)
    torch.manual_seed(0)
    teacher = zoo.GeluHead().eval()
    assert program.module()(x).shape == teacher(x).shape


def test_lower_exits_0_when_everything_becomes_legal(tmp_path, run_cli):
    code, stdout, _ = run_cli("lower", f"{ZOO}:legal_on_archnet", "-t", "npu-generic", "--input-shape", "1,3,9,9",
                              "-o", str(tmp_path / "m.pt2"), "--verify-each")
    assert code == 0 and "every node is legal on npu-generic" in stdout


def test_lower_never_overwrites_its_input(tmp_path, run_cli):
    module = zoo.LegalOnArchnet().eval()
    x = torch.randn(1, 3, 8, 8)
    model = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(module, (x,)), model)
    before = model.read_bytes()
    code, _, err = run_cli("lower", str(model), "-t", "npu-generic", "-o", str(model))
    assert code == 2 and "would overwrite the input model" in err
    assert model.read_bytes() == before


def test_passes_lists_every_pass(run_cli):
    code, out, _ = run_cli("passes")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert "fold-batch-norm" in names and "decompose-large-kernel" in names
    assert all(line.split()[1] in ("exact", "approximate") for line in out.splitlines())


def test_growth_max_leaves_an_expensive_exact_rewrite_for_distillation():
    body = """
        [performance]
        growth_max = 2.0
        [ops.conv2d]
        kernels = ["3x3"]
        """
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 7, padding=3)).eval()
    x = torch.randn(1, 3, 15, 15)
    thrifty = lower(capture(model, (x,)), (x,), target=chip(body, "thrifty.toml"))
    assert not thrifty.legal
    reasons = " ".join(thrifty.report.to_dict()["declined"]["decompose-large-kernel"])
    assert "decompose-large-kernel would cost x" in reasons and "(limit 2 on test-chip)" in reasons
    assert "pass --calib to distil a cheaper replacement, or --max-growth" in reasons
    assert lower(capture(model, (x,)), (x,), target=chip(body.replace("growth_max = 2.0", ""))).legal


def test_max_growth_overrides_the_target_limit_from_the_cli(tmp_path, run_cli):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 7, padding=3)).eval()
    x = torch.randn(1, 3, 15, 15)
    program = tmp_path / "seven.pt2"
    torch.export.save(torch.export.export(model, (x,)), program)
    report = tmp_path / "report.json"
    code, _, _ = run_cli("lower", str(program), "--target", "archnet", "--max-growth", "1.01",
                         "-o", str(tmp_path / "out.pt2"), "--report", str(report))
    reasons = " ".join(json.loads(report.read_text())["declined"]["decompose-large-kernel"])
    assert code == 1 and "decompose-large-kernel would cost x" in reasons and "(limit 1.01 on archnet)" in reasons
    code, _, err = run_cli("lower", str(program), "--target", "archnet", "--max-growth", "0",
                           "-o", str(tmp_path / "out.pt2"))
    assert code == 2 and "max_growth must be positive" in err
