"""Turning a MODEL spec into an `nn.Module` in eval mode plus example inputs.

Accepted specs:
  * ``pkg.module:callable`` or ``path/to/file.py:callable`` -- called with no arguments;
  * ``model.pt2`` -- an ExportedProgram written by ``torch.export.save``;
  * ``model.pt`` -- a whole pickled ``nn.Module``, only with ``trust_pickle=True``.
``weights`` is a state dict (``torch.save(model.state_dict(), ...)``) loaded on top of the module.
"""

from __future__ import annotations

import importlib
import json
import importlib.util
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fxrewrite.errors import InputShapeError, LoadError
from fxrewrite.frontend.capture import quiet_torch

DEFAULT_INPUT_SHAPE = "1,3,224,224"
INT_INPUT_HIGH = 10  # integer inputs (token ids) are drawn from [0, INT_INPUT_HIGH)

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        return dims if self.dtype == torch.float32 else f"{dims}:{str(self.dtype).removeprefix('torch.')}"


#: the file inside a .pt2 that names the target it was lowered for (torch.export.save's extra_files)
PT2_METADATA = "fxrewrite.json"


@dataclass
class LoadedModel:
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    spec: str
    #: the target a .pt2 written by `fxrewrite lower` names (None for other models)
    target: str | None = None


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``1,3,224,224`` or ``1,128:int64`` into an InputSpec."""
    dims_text, _, dtype_text = text.partition(":")
    try:
        shape = tuple(int(d) for d in dims_text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise LoadError(f"bad --input-shape {text!r}: expected comma-separated integers such as 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise LoadError(f"bad --input-shape {text!r}: every dimension must be a positive integer")
    dtype = torch.float32
    if dtype_text:
        if dtype_text not in _DTYPES:
            raise LoadError(f"bad --input-shape {text!r}: dtype must be one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype_text]
    return InputSpec(shape, dtype)


def make_inputs(specs: Sequence[InputSpec], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random example inputs: standard normal floats, integers in [0, INT_INPUT_HIGH)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        if spec.dtype.is_floating_point:
            tensors.append(torch.randn(spec.shape, generator=generator).to(spec.dtype))
        elif spec.dtype == torch.bool:
            tensors.append(torch.ones(spec.shape, dtype=torch.bool))
        else:
            tensors.append(torch.randint(0, INT_INPUT_HIGH, spec.shape, generator=generator, dtype=spec.dtype))
    return tuple(tensors)


def _import_callable(spec: str) -> object:
    location, _, attr_path = spec.rpartition(":")
    if not location or not attr_path:
        raise LoadError(f"bad MODEL {spec!r}: expected pkg.module:callable, a .pt2 file or a .pt file")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise LoadError(f"cannot load {spec!r}: no such file {location}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise LoadError(f"cannot load {spec!r}: importing {location} failed: {_first_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise LoadError(f"cannot load {spec!r}: no module named {location!r} ({_first_line(exc)})") from exc
    target: object = module
    for name in attr_path.split("."):
        if not hasattr(target, name):
            raise LoadError(f"cannot load {spec!r}: {location} has no attribute {attr_path!r}")
        target = getattr(target, name)
    if not callable(target):
        raise LoadError(f"cannot load {spec!r}: {attr_path} is not callable")
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _load_callable_module(spec: str) -> nn.Module:
    factory = _import_callable(spec)
    try:
        module = factory()
    except Exception as exc:
        raise LoadError(f"cannot load {spec!r}: calling it with no arguments failed: {_first_line(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise LoadError(f"cannot load {spec!r}: it returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _torch_load(path: Path, *, trust_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "weights only" in str(exc).lower() and zipfile.is_zipfile(path):
            raise LoadError(
                f"{path} holds pickled Python objects (such as a whole nn.Module); unpickling runs code from "
                "the file, so fxrewrite refuses it by default. If you trust the file, add --trust-pickle; "
                "better, save a state dict (use --weights) or a .pt2 from torch.export.save"
            ) from exc
        raise LoadError(f"cannot read {path}: not a valid torch file ({_first_line(exc)})") from exc
    except Exception as exc:
        raise LoadError(f"cannot read {path}: not a valid torch file ({_first_line(exc)})") from exc


def _load_pt2(path: Path) -> tuple[nn.Module, tuple[torch.Tensor, ...], str | None]:
    """The program's module, its example inputs, and the target it names (PT2_METADATA)."""
    extra = {PT2_METADATA: ""}
    try:
        with quiet_torch():
            program = torch.export.load(path, extra_files=extra)
    except Exception as exc:
        raise LoadError(f"cannot read {path}: not a valid .pt2 file from torch.export.save ({_first_line(exc)})") from exc
    try:
        target = json.loads(extra[PT2_METADATA]).get("target") if extra[PT2_METADATA] else None
    except (ValueError, AttributeError):
        target = None  # another writer's file of that name
    args, _kwargs = program.example_inputs or ((), {})
    return program.module(), tuple(args), target


def _load_file_module(path: Path, *, trust_pickle: bool) -> nn.Module:
    obj = _torch_load(path, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        raise LoadError(
            f"{path} is a state dict, not a model: pass the model's constructor as MODEL "
            f"(e.g. torchvision.models:resnet18) and add --weights {path}"
        )
    raise LoadError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module")


def _state_dict_from(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj:
                return _state_dict_from(obj[key], path)
    raise LoadError(f"--weights {path} is not a state dict (a mapping from parameter names to tensors)")


def _apply_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise LoadError(f"--weights {path}: no such file")
    state = _state_dict_from(_torch_load(path, trust_pickle=False), path)
    result = module.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (first: {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (first: {result.unexpected_keys[0]})")
    if problems:
        raise LoadError(f"--weights {path} does not fit the model: keys {'; '.join(problems)}")


def check_inputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Run the module once so that a wrong --input-shape fails here, with a clear message."""
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as exc:
        shapes = ", ".join(str(InputSpec(tuple(t.shape), t.dtype)) for t in inputs) or "no inputs"
        raise InputShapeError(
            f"the model fails on example inputs of shape {shapes}: {_first_line(exc)}; "
            "pass the shape the model expects with --input-shape (repeat it for several inputs)"
        ) from exc


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    trust_pickle: bool = False,
    input_shapes: Sequence[str] | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Load MODEL `spec` in eval mode with random example inputs checked against the model."""
    path = Path(spec)
    example_inputs: tuple[torch.Tensor, ...] = ()
    target = None
    if path.suffix == ".pt2":
        if not path.is_file():
            raise LoadError(f"cannot load {spec!r}: no such file")
        module, example_inputs, target = _load_pt2(path)
    elif path.is_file():
        module = _load_file_module(path, trust_pickle=trust_pickle)
    elif ":" in spec:
        module = _load_callable_module(spec)
    else:
        raise LoadError(f"cannot load {spec!r}: no such file, and not of the form pkg.module:callable")
    if weights is not None:
        _apply_weights(module, Path(weights))
    if path.suffix != ".pt2":  # an exported program is already in inference form and refuses .eval()
        module.eval()
    if input_shapes:
        example_inputs = make_inputs([parse_input_spec(s) for s in input_shapes], seed)
    elif not example_inputs:
        example_inputs = make_inputs([parse_input_spec(DEFAULT_INPUT_SHAPE)], seed)
    check_inputs(module, example_inputs)
    return LoadedModel(module, example_inputs, spec, target)
