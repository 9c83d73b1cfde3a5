"""The options exist once (fxrewrite.distill.options.TrainingOptions): the CLI's --calib group, the
API's keywords, the checkpoint's fingerprint and the report's echo are all derived from its fields."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import fxrewrite
from fxrewrite.cli.command import build_parser
from fxrewrite.distill import CALIBRATED_FIELDS, TrainingOptions
from fxrewrite.distill.distiller import _fingerprint
from fxrewrite.distill.options import option_of
from fxrewrite.errors import UsageError
from fxrewrite.target import Target


def _calib_group() -> dict[str, object]:
    """The --calib group's options as parsed with no value given: dest -> default."""
    parser = build_parser()
    lower = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" lower"))
    group = next(g for g in lower._action_groups if g.title.startswith("distillation and quantization"))
    return {action.dest: action.default for action in group._group_actions}


def test_the_cli_group_is_the_fields_with_a_flag_and_their_defaults():
    defaults = TrainingOptions()
    flagged = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainingOptions)
               if option_of(f.name).cli}
    assert _calib_group() == flagged
    assert CALIBRATED_FIELDS == tuple(name for name in flagged if name != "calib")


def test_the_api_takes_every_field_as_a_keyword_and_refuses_others():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(UsageError, match="unknown keywords warmup"):
        fxrewrite.lower(model, (torch.randn(1, 3, 8, 8),), warmup=3)
    with pytest.raises(UsageError, match="epochs without calib"):
        fxrewrite.lower(model, (torch.randn(1, 3, 8, 8),), epochs=3)


def test_the_fingerprint_holds_what_changes_training_and_nothing_of_where_it_runs(tmp_path):
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()))
    target, batches = Target.load("archnet"), [torch.ones(2, 3, 8, 8)]
    base = _fingerprint(gm, target, batches, TrainingOptions())
    for name, value in (("epochs", 7), ("temperature", None), ("wbits", 4), ("blockwise_quant", True), ("seed", 3)):
        assert _fingerprint(gm, target, batches, TrainingOptions(**{name: value})) != base, name
    for name, value in (("device", "cuda"), ("checkpoint_dir", tmp_path), ("resume", True), ("calib", "synthetic")):
        assert _fingerprint(gm, target, batches, TrainingOptions(**{name: value})) == base, name


def test_the_report_echoes_the_options_a_run_used():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    lowered = fxrewrite.lower(model, (torch.randn(1, 1, 6, 6),), target="archnet", calib=torch.randn(40, 1, 6, 6),
                              epochs=1, finetune_epochs=1, batch_size=16, time_budget=30.0)
    echo = lowered.report.to_dict()["distillation"]["options"]
    assert echo["epochs"] == 1 and echo["batch_size"] == 16 and echo["temperature"] == 4.0
    assert "device" not in echo and "calib" not in echo and "progress" not in echo
