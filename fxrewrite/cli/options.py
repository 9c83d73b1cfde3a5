"""The option groups the commands share: --debug, MODEL's options, the --calib group (distillation,
quantization and restructuring, and the keywords it becomes for `fxrewrite.lower`), --vela."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, NoReturn

from torch import fx

from fxrewrite import api
from fxrewrite.cli.exits import EXIT_BAD_INPUT
from fxrewrite.errors import UsageError
from fxrewrite.frontend import DEFAULT_INPUT_SHAPE, FRONTENDS
from fxrewrite.distill import CALIBRATED_FIELDS, TrainingOptions
from fxrewrite.quant import SOURCES_HELP

#: the options of the --calib group, by their names on the parsed arguments and as fields of TrainingOptions
FIELDS = ("calib", *CALIBRATED_FIELDS)


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
    """The --calib group: one option per field of TrainingOptions that has a flag, as the field says."""
    data = parser.add_argument_group("distillation and quantization (need --calib)")
    for option in fields(TrainingOptions):
        about = option.metadata["option"]
        if not about.cli:
            continue
        if about.kind is bool:
            switch = argparse.BooleanOptionalAction if about.negatable else "store_true"
            shown = f" (default {'on' if option.default else 'off'})" if about.negatable else ""
            data.add_argument(flag_of(option.name), action=switch, default=option.default, help=about.help + shown)
            continue
        data.add_argument(flag_of(option.name), type=about.kind, default=option.default, metavar=about.metavar,
                          choices=about.choices, help=about.help)


def flag_of(field: str) -> str:
    """The option that sets a field of TrainingOptions (`finetune_epochs` -> `--finetune-epochs`)."""
    return "--" + field.replace("_", "-")


def refuse_without_calib(args: argparse.Namespace) -> None:
    """Refuse (UsageError) the group's options given other values than their defaults while --calib is
    not: each would do nothing, as nothing is distilled, quantized or restructured without data."""
    if args.calib is not None:
        return
    default = {option.name: option.default for option in fields(TrainingOptions)}  # the group's defaults are these
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
