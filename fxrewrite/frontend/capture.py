"""Capturing an `nn.Module` as a torch.fx GraphModule with shape and dtype metadata on every node.

`auto` tries `torch.fx.symbolic_trace` first (it keeps module calls, so the graph reads like the
model) and takes `torch.export`'s graph (ATen ops) where tracing fails, as on the data-dependent
Python of `transformers` models, or leaves ops the vocabulary does not know.
"""

from __future__ import annotations

import contextlib
import io
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import fx, nn

from fxrewrite.errors import CaptureError
from fxrewrite.frontend.batch import FIXED_BATCH, at_batch, batch_dims, release_batch
from fxrewrite.frontend.canonical import canonicalize
from fxrewrite.ir import UNKNOWN, annotate_shapes, op_view

Frontend = Literal["auto", "symbolic", "export"]
FRONTENDS: tuple[str, ...] = ("auto", "symbolic", "export")
_TORCH_DIR = str(Path(torch.__file__).parent)

REMEDIES = (
    "remedies: pass fixed values for the inputs that decide control flow (concrete_args), "
    "hide the construct in a function marked with torch.fx.wrap, keep its module whole as a leaf module "
    "(a Tracer whose is_leaf_module returns True for it), or use --frontend export with inputs of the right shape"
)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence what torch logs or prints while it fails (export's multi-line dumps):
    fxrewrite's own error then says what matters, on one line."""
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def logged_errors(logger: str) -> Iterator[list[BaseException]]:
    """The exceptions `logger` (and its children) log with their traceback while the block runs, most
    recent last, kept off the terminal: torch.export.load logs the real cause of a failure and raises
    a generic error."""
    causes: list[BaseException] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                causes.append(record.exc_info[1])

    handler, log = Keep(), logging.getLogger(logger)
    propagate, log.propagate = log.propagate, False
    log.addHandler(handler)
    try:
        yield causes
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch, i.e. the model's own line that failed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_TORCH_DIR)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f" `{frame.line.strip()}`" if frame.line else ""
    return f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}{code}"


def _describe(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    return f"{_user_frame(exc)}: {message[:240]}"


def symbolic_capture(module: nn.Module) -> fx.GraphModule:
    return fx.symbolic_trace(module)


def export_capture(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """torch.export's graph of `module`, with a free batch dim where it traces that way (batch.py)."""
    with quiet_torch():
        try:
            program = torch.export.export(module, at_batch(example_inputs, 2),
                                          dynamic_shapes=batch_dims(example_inputs), strict=False)
            fixed = None
        except Exception as exc:
            program = torch.export.export(module, example_inputs, strict=False)
            fixed = f"torch.export could not trace it with a dynamic batch: {_describe(exc).lstrip(': ')}"
    gm = program.module()
    if fixed:
        gm.meta[FIXED_BATCH] = fixed
    return gm


def _unknown_nodes(gm: fx.GraphModule) -> int:
    return sum(op_view(n).kind == UNKNOWN for n in gm.graph.nodes)


def _shaped(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], name: str) -> fx.GraphModule:
    """`gm` with shape metadata, and in canonical form when it came from torch.export."""
    try:
        annotate_shapes(gm, example_inputs)
    except Exception as exc:
        raise CaptureError(f"captured {name} but running its graph on the example inputs failed"
                           f"{_describe(exc)}") from exc
    if gm.meta["fxrewrite_frontend"] in ("export", "graph"):
        canonicalize(gm, example_inputs)
        annotate_shapes(gm, example_inputs)
    return gm


def capture(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    frontend: Frontend = "auto",
) -> fx.GraphModule:
    """Capture `module` as a GraphModule whose nodes carry shape metadata.

    A GraphModule (e.g. from a .pt2 file) is taken as it is, in canonical form. `auto` traces
    symbolically and, where that leaves ops the vocabulary does not know (functions marked with
    torch.fx.wrap, such as Swin's window attention), uses torch.export when it sees more. Raises
    CaptureError naming the construct that failed in each frontend tried, and the remedies.
    """
    if frontend not in FRONTENDS:
        raise CaptureError(f"unknown frontend {frontend!r}: choose one of {', '.join(FRONTENDS)}")
    name = type(module).__name__
    if isinstance(module, fx.GraphModule) and frontend != "export":
        gm, note = release_batch(module, example_inputs)
        if gm is module and note != "nothing fixes its batch":
            gm.meta[FIXED_BATCH] = note
        gm.meta.setdefault("fxrewrite_frontend", "graph")
        return _shaped(gm, example_inputs, name)
    failures = []
    gm = None
    if frontend in ("auto", "symbolic"):
        try:
            gm = symbolic_capture(module)
            gm.meta["fxrewrite_frontend"] = "symbolic"
            gm = _shaped(gm, example_inputs, name)
        except CaptureError:
            raise
        except Exception as exc:
            failures.append(f"symbolic tracing failed{_describe(exc)}")
            gm = None
    if frontend == "export" or (frontend == "auto" and (gm is None or _unknown_nodes(gm))):
        try:
            exported = export_capture(module, example_inputs)
            exported.meta["fxrewrite_frontend"] = "export"
            exported = _shaped(exported, example_inputs, name)
            if gm is None or _unknown_nodes(exported) < _unknown_nodes(gm):
                gm = exported
        except CaptureError:
            if gm is None:
                raise
        except Exception as exc:
            failures.append(f"torch.export failed{_describe(exc)}")
    if gm is None:
        raise CaptureError(f"cannot capture {name}: {'; '.join(failures)}; {REMEDIES}")
    return gm
