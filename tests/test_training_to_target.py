"""Training to a target (issue 13): all calibration inputs by default, phases that stop on a held-out
plateau or the time budget and keep their best epoch, and the held-out score recorded over time."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from conftest import chip, symbolic
from fxrewrite import lower
from fxrewrite.distill.training.checkpoints import Checkpoints
from fxrewrite.distill.training.loop import lr_factor, train_phase
from fxrewrite.distill.training.monitor import Monitor
from fxrewrite.metrics import Score
from fxrewrite.quant import load_calibration

EXAMPLE = torch.zeros(1, 3, 5, 5)


def test_every_calibration_input_is_used_unless_capped_and_a_cap_is_said(tmp_path):
    np.save(tmp_path / "x.npy", np.random.rand(4000, 3, 5, 5).astype(np.float32))
    everything = load_calibration(str(tmp_path / "x.npy"), EXAMPLE, size=None, batch_size=64)
    assert everything.samples == (3200, 800) and everything.dropped == 0
    capped = load_calibration(str(tmp_path / "x.npy"), EXAMPLE, size=1024, batch_size=64)
    assert sum(capped.samples) == 1024 and capped.dropped == 2976


class Marked(nn.Module):
    """One weight that records which epoch wrote it last."""

    def __init__(self):
        super().__init__()
        self.mark = nn.Parameter(torch.zeros(()))


def _run(scores: list[float | Score], patience: int | None, deadline: float | None = None, epochs: int = 10,
         added_loss: list[float] | None = None, batches: int = 1, progress=None, ask_loss: bool = False,
         retries: int = 0, rates: list[float] | None = None, stretch: bool = False):
    """train_phase over a model whose step sets its mark to the epoch number, scored from `scores` (the
    first is the state before training), its loss raised by `added_loss[epoch]`."""
    model = Marked()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0 / batches)
    epoch_scores = iter(s if isinstance(s, Score) else Score(None, s) for s in scores)

    def loss(epoch: int, _: object) -> torch.Tensor:
        if rates is not None:
            rates.append(optimizer.param_groups[0]["lr"])
        # one SGD step of rate 1 lands on epoch + 1
        return (model.mark - (epoch + 1)) ** 2 / 2 + (added_loss[epoch] if added_loss else 0.0)

    monitor = Monitor(lambda: next(epoch_scores), 0.0, [], patience, deadline, ask_loss, retries)
    train_phase("phase", epochs, model, optimizer, [None] * batches, loss, Checkpoints(None, "", False), progress,
                monitor, stretch=stretch)
    return model.mark.item(), monitor


def test_a_phase_stops_on_a_plateau_and_ends_in_its_best_epoch():
    mark, monitor = _run([0.4, 0.5, 0.6, 0.55, 0.58, 0.57, 0.9, 0.95], patience=3)
    assert len(monitor.history) == 6 and monitor.stopped == "no held-out gain in 3 epochs"
    assert mark == 2.0  # the second epoch scored best; the fifth was the last run


def test_a_phase_whose_loss_still_falls_is_no_plateau():
    falling = [4.0, 3.0, 2.0, 1.5, 1.2, 1.15, 1.14, 1.13, 1.12, 1.11]  # added to a loss of 0.5 per epoch
    scores = [0.4, 0.5, 0.6, 0.55, 0.58, 0.57, 0.56, 0.55, 0.54, 0.53, 0.52]
    mark, monitor = _run(scores, patience=3, added_loss=falling, ask_loss=True)
    # epochs 3-5 gained nothing held out, but the loss fell 2.5 -> 1.7; by epoch 8 it fell under 5% in 3 epochs
    assert monitor.stopped == "no held-out gain in 6 epochs" and len(monitor.history) == 9 and mark == 2.0
    # a monitor not told to ask the loss (the blockwise phase's) stops on the held-out plateau alone
    _, blockwise = _run(scores, patience=3, added_loss=falling)
    assert blockwise.stopped == "no held-out gain in 3 epochs" and len(blockwise.history) == 6


def test_without_patience_every_epoch_runs_and_the_best_is_still_kept():
    mark, monitor = _run([0.4, 0.5, 0.9, 0.6, 0.7], patience=None, epochs=4)
    assert len(monitor.history) == 5 and not monitor.stopped and mark == 2.0


def test_no_phase_ends_worse_than_it_began():
    mark, monitor = _run([0.9, 0.5, 0.6], patience=None, epochs=2)
    assert [p.epoch for p in monitor.history] == [0, 1, 2] and mark == 0.0  # the starting state is kept


def test_agreement_falling_to_chance_stops_the_phase_and_rolls_back():
    scores = [Score(0.5, 0.8, 10), Score(0.85, 0.9, 10), Score(0.6, 0.7, 10), Score(0.12, 0.2, 10), Score(0.9, 1, 10)]
    mark, monitor = _run(scores, patience=None, epochs=4)
    assert monitor.stopped == ("held-out agreement fell to 12.0%, chance level for 10 classes; rolled back to epoch 1, "
                               "the best held-out score") and mark == 1.0
    # a student at chance from the start (random initialisation) is not stopped for it
    _, still = _run([Score(0.1, 0.1, 10), Score(0.11, 0.2, 10), Score(0.12, 0.3, 10)], patience=None, epochs=2)
    assert not still.stopped


def test_a_growing_loss_stops_the_phase_and_rolls_back():
    mark, monitor = _run([0.4, 0.5, 0.6, 0.55, 0.5, 0.9], patience=None, epochs=5, added_loss=[0.0, 0.0, 1.0, 2.0, 3.0])
    assert monitor.stopped == "the training loss grew 2 epochs running (0.5 -> 1.5 -> 2.5); rolled back to epoch 2, " \
                              "the best held-out score" and mark == 2.0


def test_a_growing_loss_with_retries_left_rolls_back_and_halves_the_learning_rate():
    rates = []
    mark, monitor = _run([0.4, 0.5, 0.6, 0.55, 0.5, 0.9, 0.95], patience=None, epochs=6,
                         added_loss=[0.0, 0.0, 1.0, 2.0, 0.0, 0.0], retries=1, rates=rates)
    assert monitor.rollbacks == ["epoch 4: the training loss grew 2 epochs running (0.5 -> 1.5 -> 2.5); rolled back "
                                 "to epoch 2 and halved the learning rate"]
    assert not monitor.stopped and len(monitor.history) == 7  # every epoch ran, the last two at half the rate
    assert rates == [1.0] * 4 + [0.5] * 2
    assert mark == 4.75  # back at epoch 2's mark (2), then half steps towards 5 (3.5) and 6 (4.75)


def test_a_deadline_too_near_is_said_after_the_first_batches_not_after_an_epoch():
    events = []
    _run([0.4, 0.5, 0.6], patience=None, deadline=0.0, epochs=2, batches=10, progress=events.append)
    first = events[0]
    assert first.within_epoch and first.epoch == 0 and "timed on its first 8 batches" in first.note
    assert "--time-budget" in first.note and "--device cuda" in first.note and "--calib-size" in first.note
    assert not events[1].within_epoch and events[1].note == ""  # said once


def test_a_stretched_phase_runs_to_the_cap_its_deadline_leaves_room_for_and_ends_in_its_best_state():
    rising = [0.1 * k for k in range(20)]
    mark, monitor = _run(rising, patience=3, deadline=time.perf_counter() + 600, epochs=4, stretch=True)
    assert len(monitor.history) == 13 and mark == 12.0  # 3 x the cap of 4, every epoch a gain
    # no plateau stops it: the epochs after a stale run of 3 still train, and the best (epoch 6) is kept
    mark, monitor = _run([0.4, 0.5, 0.6, 0.55, 0.58, 0.57, 0.9] + [0.5] * 6, patience=3,
                         deadline=time.perf_counter() + 600, epochs=4, stretch=True)
    assert not monitor.stopped and len(monitor.history) == 13 and mark == 6.0
    mark, monitor = _run(rising, patience=3, epochs=4, stretch=True)  # no deadline: the cap holds
    assert len(monitor.history) == 5 and mark == 4.0


def test_a_passed_deadline_stops_after_the_epoch_that_passed_it():
    mark, monitor = _run([0.4, 0.5, 0.6, 0.7], patience=None, deadline=0.0)
    assert len(monitor.history) == 2 and mark == 1.0
    # the budget was spent before the first epoch ended: the stop says what the phase would need
    assert monitor.stopped.startswith("time budget reached (phase: an epoch takes") and "--time-budget" in monitor.stopped


def test_agreement_decides_before_cosine():
    assert Score(0.9, 0.5).beats(Score(0.8, 0.99)) and not Score(0.8, 0.99).beats(Score(0.9, 0.5))
    assert Score(0.9, 0.6).beats(Score(0.9, 0.5)) and not Score(0.9, 0.50001).beats(Score(0.9, 0.5))


def test_the_learning_rate_warms_up_then_falls_to_zero_at_the_cap():
    total = 200
    factors = [lr_factor(step, total) for step in range(total)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[-1] < 1e-3
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))


class Gelus(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 5 * 5, 6)

    def forward(self, x):
        return self.head(nn.functional.gelu(self.conv(x)).flatten(1))


def test_the_report_records_agreement_over_time_and_ends_at_the_best_fine_tuning_epoch():
    torch.manual_seed(0)
    x = torch.randn(320, 3, 5, 5)
    lowered = lower(symbolic(Gelus().eval(), x[:1]), (x[:1],), target=chip("[ops.conv2d]\n[ops.relu]\n[ops.linear]\n[ops.flatten]\n"),
                    calib=x, epochs=6, finetune_epochs=6, patience=None)
    distillation = lowered.report.distillation
    phases = [p.phase for p in distillation.history]
    assert phases == ["blockwise-parallel"] * 7 + ["finetune"] * 7  # each phase scored before its first epoch too
    assert all(a.seconds <= b.seconds for a, b in zip(distillation.history, distillation.history[1:]))
    best = max((p for p in distillation.history if p.phase == "finetune"), key=lambda p: (p.agreement, p.cosine))
    # the written graph is the best fine-tuning epoch's, measured again on the same held-out inputs
    assert abs(distillation.agreement.top1 - best.agreement) < 0.02
    assert abs(distillation.agreement.cosine - best.cosine) < 2e-3
    assert distillation.samples == (256, 64)  # every input given, no cap
    document = lowered.report.to_dict()["distillation"]
    assert len(document["history"]) == 14 and document["stops"] == {}
    # each phase trained on its 256 inputs 6 times, at some positive number of samples a second
    assert set(document["samples_per_second"]) == {"blockwise", "finetune"}
    assert all(rate > 0 for rate in document["samples_per_second"].values())
    assert "training speed: blockwise" in distillation.to_text()
    # six fine-tuning epochs: enough for the outlook's fit, which the report says and keeps
    assert document["outlook"]["phase"] == "finetune" and document["outlook"]["epochs"] == 6
    assert f"longer budget: {distillation.outlook.text}" in distillation.to_text()


def test_a_phase_counts_the_samples_it_trained_on():
    model = Marked()
    monitor = Monitor(lambda: Score(None, 0.5), 0.0, [], None)
    batches = [torch.zeros(5), torch.zeros(5), torch.zeros(3)]
    train_phase("phase", 2, model, torch.optim.SGD(model.parameters(), lr=0.1), batches,
                lambda _, batch: (model.mark - batch.sum()) ** 2, Checkpoints(None, "", False), None, monitor)
    assert monitor.samples == 26 and monitor.samples_per_second > 0


def test_a_cap_that_drops_calibration_inputs_is_said_by_the_cli(tmp_path, run_cli):
    torch.manual_seed(0)
    program = tmp_path / "gelus.pt2"
    torch.export.save(torch.export.export(Gelus().eval(), (torch.randn(2, 3, 5, 5),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), program)
    np.save(tmp_path / "x.npy", np.random.rand(100, 3, 5, 5).astype(np.float32))
    common = ["lower", str(program), "-t", "archnet", "--calib", str(tmp_path / "x.npy"), "--epochs", "1",
              "--finetune-epochs", "1", "-o", str(tmp_path / "out.pt2")]
    code, stdout, stderr = run_cli(*common, "--calib-size", "60")
    assert code in (0, 1), stderr
    assert "48 inputs from" in stdout and "--calib-size left out 40 of the inputs given" in stdout
    code, stdout, _ = run_cli(*common)
    assert "80 inputs from" in stdout and "left out" not in stdout
