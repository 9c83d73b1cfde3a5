"""Errors a user can act on. The CLI prints their message on one line and exits with `exit_code`."""


class FxrewriteError(Exception):
    """Base class: a failure caused by the user's input, not by fxrewrite."""

    exit_code = 2


class LoadError(FxrewriteError):
    """A MODEL spec, weights file or input shape could not be turned into a runnable module."""


class InputShapeError(FxrewriteError):
    """The model rejected the example inputs built from --input-shape."""


class CaptureError(FxrewriteError):
    """Neither frontend could turn the module into a torch.fx graph."""


class TargetError(FxrewriteError):
    """A target description is missing or invalid."""


class UsageError(FxrewriteError):
    """A command-line value that cannot work, such as an output file with an unknown suffix."""


class DistillError(FxrewriteError):
    """A region no student can stand in for, or data that does not fit the model."""


class TrainingDiverged(FxrewriteError):
    """A training loss or held-out score became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class VerificationError(FxrewriteError):
    """A rewritten graph differs from its teacher beyond the tolerance: a bug in a rewrite."""

    exit_code = 3


class PassContractError(FxrewriteError):
    """A pass declares ordering contracts that do not hold: a bug in that pass's declaration."""

    exit_code = 3


class VelaError(FxrewriteError):
    """ExecuTorch's Arm backend or Vela could not compile a graph (their own message follows)."""

    exit_code = 1


class OnnxRefusal(FxrewriteError):
    """The ONNX form of a lowered graph holds a node the target does not run (nothing is written)."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def check_positive(flag: str, value: object) -> None:
    """Refuse (UsageError) a value of option `flag` that is not a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise UsageError(f"{flag} {value!r}: give a positive finite number")
