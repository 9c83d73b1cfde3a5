"""The option groups the commands share: --debug, MODEL's options, the --calib group (distillation,
quantization and restructuring, and the keywords it becomes for `fxrewrite.lower`), --vela."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from torch import fx

from fxrewrite import api
from fxrewrite.cli.exits import EXIT_BAD_INPUT
from fxrewrite.distill import SCHEDULES
from fxrewrite.errors import UsageError
from fxrewrite.frontend import DEFAULT_INPUT_SHAPE, FRONTENDS
from fxrewrite.lowering import CALIBRATED_FIELDS, TrainingOptions
from fxrewrite.quant import METHODS, SOURCES_HELP

#: the options of the --calib group, by their names on the parsed arguments and as fields of TrainingOptions
FIELDS = ("calib", *CALIBRATED_FIELDS)
#: the group's defaults: TrainingOptions', the API's (one set of defaults for both)
DEFAULTS = TrainingOptions()


class Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr, as every other bad input (the full usage is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def common(default: object = False) -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=default, help="show the Python traceback of an error")
    return common


def captured(args: argparse.Namespace) -> fx.GraphModule:
    """MODEL as its options describe it, loaded and captured (fxrewrite.api.load_and_capture)."""
    return api.load_and_capture(args.model, weights=args.weights, trust_pickle=args.trust_pickle,
                                input_shapes=args.input_shape, frontend=args.frontend, seed=args.seed)


def add_trust_pickle(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--trust-pickle", action="store_true",
                        help=f"allow {what} to need unpickling: a pickled nn.Module, a .pt2 with pickled parts; "
                             "unpickling runs code from the file")


def model_args() -> argparse.ArgumentParser:
    parser = Parser(add_help=False)
    parser.add_argument("model", metavar="MODEL",
                        help="pkg.module:callable (e.g. torchvision.models:resnet18), file.py:callable, "
                             "a .pt2 from torch.export.save, a TorchScript archive from torch.jit.save, or a "
                             "pickled module (.pt) with --trust-pickle")
    parser.add_argument("--weights", metavar="STATE_DICT", help="state dict loaded into MODEL (weights_only)")
    add_trust_pickle(parser, "MODEL (and --weights)")
    parser.add_argument("--input-shape", action="append", metavar="SHAPE",
                        help=f"shape of one model input, e.g. 1,3,224,224 or 1,128:int64; repeat for several "
                             f"inputs (default: {DEFAULT_INPUT_SHAPE}, or the example inputs stored in a .pt2)")
    parser.add_argument("--frontend", choices=FRONTENDS, default="auto",
                        help="symbolic: torch.fx.symbolic_trace; export: torch.export; "
                             "auto (default): symbolic, falling back to export")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random example inputs (default 0)")
    return parser


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("distillation and quantization (need --calib)")
    data.add_argument("--calib", metavar="DATA", help=f"inputs for distillation and calibration: {SOURCES_HELP}; "
                                                      "labels are never read")
    data.add_argument("--calib-size", type=int, metavar="N",
                      help="use at most the first N inputs (default: all; 1024 for synthetic); the last fifth is "
                           "held out to judge training and for the report")
    data.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, metavar="N",
                      help="training batch size (default %(default)s)")
    data.add_argument("--wbits", type=int, metavar="B", help="weight bits: one of the target's weight formats")
    data.add_argument("--abits", type=int, metavar="B", help="activation bits: one of the target's activation formats")
    data.add_argument("--quant", choices=METHODS, default=DEFAULTS.quant,
                      help="fake quantization method (default %(default)s)")
    data.add_argument("--schedule", choices=SCHEDULES, default=DEFAULTS.schedule,
                      help="blockwise schedule: all students at once, or Arch-Net's progressive one (default "
                           "%(default)s)")
    data.add_argument("--epochs", type=int, default=DEFAULTS.epochs, metavar="N",
                      help="at most N blockwise epochs (default %(default)s); a phase stops earlier on a plateau or the "
                           "time budget, and keeps its best epoch")
    data.add_argument("--finetune-epochs", type=int, default=DEFAULTS.finetune_epochs, metavar="N",
                      help="at most N end-to-end fine-tuning epochs (default %(default)s)")
    data.add_argument("--patience", type=int, default=DEFAULTS.patience, metavar="N",
                      help="stop a phase after N epochs without a gain in held-out agreement or cosine (fine-tuning: its "
                           "training loss also falling by under 5%% over them; default %(default)s)")
    data.add_argument("--time-budget", type=float, default=DEFAULTS.time_budget, metavar="SECONDS",
                      help="distillation time: blockwise phases may use 60%%, fine-tuning the rest (default "
                           "%(default)g)")
    data.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate (default %(default)g)")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=DEFAULTS.augment,
                      help="fine-tune on shifted, mirrored and mixed-up inputs relabelled by the teacher "
                           f"(default {'on' if DEFAULTS.augment else 'off'})")
    data.add_argument("--blockwise-quant", action=argparse.BooleanOptionalAction,
                      default=DEFAULTS.blockwise_quant,
                      help="with --wbits/--abits, train the students quantized from the blockwise phase on, as "
                           f"Arch-Net does (default {'on' if DEFAULTS.blockwise_quant else 'off'}; off: "
                           "quantized from the fine-tuning on)")
    data.add_argument("--student-budget", type=float, default=DEFAULTS.student_budget, metavar="X",
                      help="each student may cost X times its teacher region's estimated cycles and MACs, and an "
                           "exact rewrite dearer than X times its node (and at least 5%% of the model) is distilled "
                           "instead (default %(default)g)")
    data.add_argument("--accuracy-budget", type=float, default=DEFAULTS.accuracy_budget, metavar="POINTS",
                      help="on a legal graph, replace blocks by cheaper ones with fewer non-linearities (RAN-e's "
                           "collapsed inverted residual, RAN-i's narrow pair, SESR's collapsed conv pair) where the "
                           "target's cost says they are faster, while held-out top-1 agreement with the teacher "
                           "stays within POINTS of 100%% (for outputs that are not class scores, or scores of one "
                           "class for every input, the cosine within POINTS/100 of 1; default %(default)g; "
                           "0: no restructuring)")
    data.add_argument("--device", default=DEFAULTS.device, help="where to train: cpu or cuda (default %(default)s)")
    data.add_argument("--resume", action="store_true",
                      help="continue from the checkpoint in OUT.ckpt/ after an interrupted run")


def flag_of(field: str) -> str:
    """The option that sets a field of TrainingOptions (`finetune_epochs` -> `--finetune-epochs`)."""
    return "--" + field.replace("_", "-")


def refuse_without_calib(args: argparse.Namespace) -> None:
    """Refuse (UsageError) the group's options given other values than their defaults while --calib is
    not: each would do nothing, as nothing is distilled, quantized or restructured without data."""
    if args.calib is not None:
        return
    defaults = argparse.ArgumentParser()
    add_training_arguments(defaults)
    default = vars(defaults.parse_args([]))
    idle = [flag_of(name) for name in FIELDS if getattr(args, name) != default[name]]
    if idle:
        one = len(idle) == 1
        raise UsageError(f"{', '.join(idle)} {'needs' if one else 'need'} calibration data "
                         f"({'it steers' if one else 'they steer'} distillation, quantization or restructuring, which "
                         f"run only with it): pass --calib with {SOURCES_HELP}, or leave {'it' if one else 'them'} out")


def training_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The group's values as keywords of `fxrewrite.lower` (fields of TrainingOptions); without --calib
    only that (the others are at their defaults: refuse_without_calib)."""
    return {name: getattr(args, name) for name in FIELDS if args.calib is not None or name == "calib"}


def add_vela_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vela", action="store_true",
                        help="also compile through ExecuTorch's Arm backend and Vela for the target's Ethos-U "
                             "accelerator (int8) and report Vela's cycles, time, memory and the ops left on the "
                             "CPU (needs the ethos-u extra)")
