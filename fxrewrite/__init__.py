"""fxrewrite: lower PyTorch models onto the operator set of one NPU with torch.fx graph rewrites."""

from fxrewrite.api import Lowered, check, draw, load_and_capture, lower
from fxrewrite.errors import CaptureError, FxrewriteError, InputShapeError, LoadError, TargetError
from fxrewrite.frontend import capture
from fxrewrite.ir import OpView, op_view
from fxrewrite.legality import CheckReport
from fxrewrite.report import LoweringReport
from fxrewrite.target import Target, Verdict

__all__ = [
    "CaptureError", "CheckReport", "FxrewriteError", "InputShapeError", "Lowered", "LoweringReport", "LoadError",
    "OpView", "Target", "TargetError", "Verdict", "capture", "check", "draw", "load_and_capture", "lower", "op_view",
]
