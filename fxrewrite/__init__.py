"""fxrewrite: lower PyTorch models onto the operator set of one NPU with torch.fx graph rewrites."""

from fxrewrite.api import check, draw, load_and_capture
from fxrewrite.capture import capture
from fxrewrite.errors import CaptureError, FxrewriteError, InputShapeError, LoadError, TargetError
from fxrewrite.legality import CheckReport
from fxrewrite.ops import OpView, op_view
from fxrewrite.target import Target, Verdict

__all__ = [
    "CaptureError", "CheckReport", "FxrewriteError", "InputShapeError", "LoadError", "OpView", "Target",
    "TargetError", "Verdict", "capture", "check", "draw", "load_and_capture", "op_view",
]
