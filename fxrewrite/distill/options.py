"""The one set of options for what runs on calibration data: distillation, quantization and
restructuring, with their defaults, documented here once.

Everything else is derived from these fields: the CLI's --calib group (flag, type, default and help
come from each field's `Option`; fxrewrite.cli.options), the keywords of `fxrewrite.lower`, the
checkpoint's fingerprint (the fields whose `part` changes what is trained:
fxrewrite.distill.distiller) and the report's echo of the options a run trained with.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch

from fxrewrite.distill.sizing import DEFAULT_STUDENT_BUDGET
from fxrewrite.distill.training.checkpoints import ProgressCallback
from fxrewrite.distill.training.schedules import SCHEDULES, Schedule
from fxrewrite.quant import METHODS, SOURCES_HELP, Method

#: what a field steers: the calibration data, quantization, training, the restructuring planner, or
#: where and how a run goes (runtime: a checkpoint written under other values is resumed)
Part = Literal["data", "quantization", "training", "planner", "runtime"]
#: the parts that change what is trained, so a checkpoint's fingerprint holds them
TRAINED_PARTS = frozenset({"quantization", "training"})

#: points of held-out top-1 agreement the restructuring planner may spend by default
DEFAULT_ACCURACY_BUDGET = 0.5


def shape_of(text: str) -> tuple[int, ...]:
    """`1,3,224,224` -> (1, 3, 224, 224), for the CLI."""
    try:
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no shape: give sizes separated by commas, such as "
                                         "1,3,224,224") from None


@dataclass(frozen=True)
class Option:
    """How a field appears outside Python: its part, and its CLI flag (`--name-with-dashes`) where it
    has one (`cli`), with its value type, help (argparse's %(default)s may appear; a switch's help
    gets its default as on or off) and metavar."""

    part: Part
    help: str
    kind: type | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    cli: bool = True
    #: a switch with a --no-... form (one without is set by being given)
    negatable: bool = True


def _option(default: Any, part: Part, help: str, kind: type | None = None, metavar: str | None = None,
            choices: tuple[str, ...] | None = None, cli: bool = True, negatable: bool = True) -> Any:
    return field(default=default, metadata={"option": Option(part, help, kind, metavar, choices, cli, negatable)})


@dataclass
class TrainingOptions:
    """Calibration data and how to use it (module docstring); each field's help says what it does."""

    calib: str | torch.Tensor | None = _option(
        None, "data", f"inputs for distillation and calibration: {SOURCES_HELP}; labels are never read", str, "DATA")
    calib_size: int | None = _option(
        None, "data", "use at most the first N inputs (default: all; 1024 for synthetic); the last fifth is held out "
                      "to judge training and for the report", int, "N")
    batch_size: int = _option(64, "data", "training batch size (default %(default)s)", int, "N")
    wbits: int | None = _option(None, "quantization", "weight bits: one of the target's weight formats", int, "B")
    abits: int | None = _option(None, "quantization", "activation bits: one of the target's activation formats",
                                int, "B")
    quant: Method = _option("lsq", "quantization", "fake quantization method (default %(default)s)", str,
                            choices=METHODS)
    schedule: Schedule = _option(
        "parallel", "training", "blockwise schedule: all students at once, or Arch-Net's progressive one (default "
                                "%(default)s)", str, choices=SCHEDULES)
    epochs: int = _option(
        40, "training", "at most N blockwise epochs (default %(default)s); a phase stops earlier on a plateau or the "
                        "time budget, and keeps its best epoch", int, "N")
    finetune_epochs: int | None = _option(
        None, "training", "at most N end-to-end fine-tuning epochs (default: 20, stretched to at most 60 where the "
                          "time budget has room left: fine-tuning raises agreement most per second)", int, "N")
    patience: int | None = _option(
        3, "training", "stop a phase after N epochs without a gain in held-out agreement or cosine (fine-tuning: its "
                       "training loss also falling by under 5%% over them; default %(default)s)", int, "N")
    time_budget: float | None = _option(
        600.0, "training", "distillation time: blockwise phases may use 60%%, fine-tuning the rest (default "
                           "%(default)g)", float, "SECONDS")
    lr: float = _option(3e-3, "training", "Adam learning rate (default %(default)g)", float)
    #: the recipe parts that helped in the MNIST ablation (benchmarks/test_bench_distill_defaults.py)
    cosine_lr: bool = _option(True, "training", "warm-up then cosine learning rate in every phase "
                                                "(fxrewrite.distill.training.loop)", cli=False)
    temperature: float | None = _option(4.0, "training", "soft-target KL at this temperature in the fine-tuning, "
                                                         "where the output is class scores", cli=False)
    augment: bool = _option(False, "training", "fine-tune on shifted, mirrored and mixed-up inputs relabelled by the "
                                               "teacher", bool)
    blockwise_quant: bool = _option(
        False, "quantization", "with --wbits/--abits, train the students quantized from the blockwise phase on, as "
                               "Arch-Net does; off: quantized from the fine-tuning on", bool)
    student_budget: float = _option(
        DEFAULT_STUDENT_BUDGET, "training", "each student may cost X times its teacher region's estimated cycles and "
        "MACs, and an exact rewrite dearer than X times its node (and at least 5%% of the model) is distilled "
        "instead (default %(default)g)", float, "X")
    accuracy_budget: float = _option(
        DEFAULT_ACCURACY_BUDGET, "planner", "on a legal graph, replace blocks by cheaper ones with fewer "
        "non-linearities (RAN-e's collapsed inverted residual, RAN-i's narrow pair, SESR's collapsed conv pair) where "
        "the target's cost says they are faster, while held-out top-1 agreement with the teacher stays within POINTS "
        "of 100%% (for outputs that are not class scores, or scores of one class for every input, the cosine within "
        "POINTS/100 of 1; default %(default)g; 0: no restructuring)", float, "POINTS")
    deploy_shape: tuple[int, ...] | None = _option(
        None, "planner", "cost the restructuring at the input shape the network is deployed at, such as "
        "1,3,224,224, while agreement is judged on the calibration data (a resolution-free network calibrated at "
        "another size; default: the captured input shape)", shape_of, "SHAPE")
    #: a block's cycles on the chip (module, input, signature) -> cycles; None: the target's estimate, or
    #: Vela's on an Ethos-U target where the ethos-u extra is installed (fxrewrite.lower)
    block_cycles: Callable[..., float] | None = _option(None, "planner", "the restructuring planner's cycles per "
                                                                         "block", cli=False)
    seed: int = _option(0, "training", "seed of the students' initialisation and the data split", cli=False)
    device: str = _option("cpu", "runtime", "where to train: cpu or cuda (default %(default)s)", str)
    checkpoint_dir: Path | None = _option(None, "runtime", "where epoch checkpoints go", cli=False)
    resume: bool = _option(False, "runtime", "continue from the checkpoint in OUT.ckpt/ after an interrupted run",
                           bool, negatable=False)
    progress: ProgressCallback | None = _option(None, "runtime", "called with every progress event", cli=False)

    @property
    def wants_quantization(self) -> bool:
        return self.wbits is not None or self.abits is not None

    def trained_echo(self) -> dict[str, Any]:
        """The fields that change what is trained, by name (the checkpoint's fingerprint)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["option"].part in TRAINED_PARTS}

    def report_echo(self) -> dict[str, Any]:
        """Every option a run used but where it ran and the data itself (its source is reported beside
        it), with the values a report can hold (a planner's cycles function is named by its class)."""
        echo = {}
        for f in fields(self):
            if f.metadata["option"].part == "runtime" or f.name == "calib":
                continue
            value = getattr(self, f.name)
            plain = value is None or isinstance(value, (bool, int, float, str))
            echo[f.name] = value if plain else list(value) if isinstance(value, tuple) else type(value).__name__
        return echo


def option_of(name: str) -> Option:
    """The Option of a field of TrainingOptions."""
    return next(f.metadata["option"] for f in fields(TrainingOptions) if f.name == name)


#: the fields that act only on calibration data (the CLI's --calib group, less --calib itself)
CALIBRATED_FIELDS = tuple(f.name for f in fields(TrainingOptions) if f.metadata["option"].cli and f.name != "calib")
