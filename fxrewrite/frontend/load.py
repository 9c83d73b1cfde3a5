"""Turning a MODEL spec into an `nn.Module` in eval mode plus example inputs.

Accepted specs:
  * ``pkg.module:callable`` or ``path/to/file.py:callable`` -- called with no arguments;
  * ``model.pt2`` -- an ExportedProgram written by ``torch.export.save``;
  * ``model.pt`` -- a whole pickled ``nn.Module``, only with ``trust_pickle=True``.
``weights`` is a state dict (``torch.save(model.state_dict(), ...)``) loaded on top of the module.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import importlib.util
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fxrewrite.errors import InputShapeError, LoadError, first_line
from fxrewrite.frontend.archives import (TRUST_ADVICE, check_intact, check_pt2_safe, is_pt2, is_torchscript,
                                        load_torchscript)
from fxrewrite.frontend.batch import release_batch
from fxrewrite.frontend.capture import logged_errors
from fxrewrite.frontend.inputs import DEFAULT_INPUT_SHAPE, check_inputs, make_inputs, parse_input_spec

#: the file inside a .pt2 that names the target it was lowered for (torch.export.save's extra_files)
PT2_METADATA = "fxrewrite.json"


@dataclass
class LoadedModel:
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    spec: str
    #: the target a .pt2 written by `fxrewrite lower` names (None for other models)
    target: str | None = None


def import_callable(spec: str, what: str = "MODEL") -> object:
    """The callable `pkg.module:name` or `path/to/file.py:name` names (`what` is the option, for messages)."""
    location, _, attr_path = spec.rpartition(":")
    if not location or not attr_path:
        raise LoadError(f"bad {what} {spec!r}: expected pkg.module:callable or file.py:callable")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise LoadError(f"cannot load {spec!r}: no such file {location}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise LoadError(f"cannot load {spec!r}: importing {location} failed: {first_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise LoadError(f"cannot load {spec!r}: no module named {location!r} ({first_line(exc)})") from exc
    target: object = module
    for name in attr_path.split("."):
        if not hasattr(target, name):
            raise LoadError(f"cannot load {spec!r}: {location} has no attribute {attr_path!r}")
        target = getattr(target, name)
    if not callable(target):
        raise LoadError(f"cannot load {spec!r}: {attr_path} is not callable")
    return target


def callable_source(spec: str) -> Path | None:
    """The file a `file.py:callable` or `pkg.module:callable` spec runs code from; None where the
    module cannot be found (loading it says why)."""
    location = spec.rpartition(":")[0]
    if location.endswith(".py"):
        return Path(location)
    try:
        found = importlib.util.find_spec(location)  # imports the module's parent packages, as loading would
    except Exception:  # noqa: BLE001 - any failure to find it is reported when it is loaded
        return None
    return Path(found.origin) if found is not None and found.has_location and found.origin else None


def spec_files(spec: str) -> list[Path]:
    """The files loading a MODEL or --calib `spec` reads: the file or folder it names, or the source
    of the callable it names."""
    if Path(spec).exists():
        return [Path(spec)]
    source = callable_source(spec) if ":" in spec else None
    return [source] if source is not None else []


def _load_callable_module(spec: str) -> nn.Module:
    factory = import_callable(spec)
    try:
        module = factory()
    except Exception as exc:
        raise LoadError(f"cannot load {spec!r}: calling it with no arguments failed: {first_line(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise LoadError(f"cannot load {spec!r}: it returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _missing_code(exc: Exception) -> str | None:
    """What an unpickled module needs that cannot be imported, from the unpickler's error."""
    if isinstance(exc, ModuleNotFoundError):
        return f"the module {exc.name!r} that defines its class cannot be imported"
    if isinstance(exc, AttributeError) and "Can't get attribute" in str(exc):
        return f"its class cannot be found ({first_line(exc)})"
    return None


def _torch_load(path: Path, *, trust_pickle: bool, what: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "weights only" in str(exc).lower() and zipfile.is_zipfile(path):
            raise LoadError(
                f"{what} {path} holds pickled Python objects (such as a whole nn.Module); {TRUST_ADVICE}; "
                "better, save a state dict (use --weights) or a .pt2 from torch.export.save"
            ) from exc
        raise LoadError(f"cannot read {what} {path}: not a valid torch file ({first_line(exc)})") from exc
    except Exception as exc:
        missing = _missing_code(exc)
        if missing:
            raise LoadError(f"cannot unpickle {what} {path}: {missing}; make the code that saved it importable "
                            "(PYTHONPATH) or save a .pt2 with torch.export.save") from exc
        raise LoadError(f"cannot read {what} {path}: not a valid torch file ({first_line(exc)})") from exc


def _pt2_inputs(path: Path, example: tuple | None) -> tuple[torch.Tensor, ...]:
    """The positional tensors a .pt2 was exported with; refused where they are nested or by keyword."""
    args, kwargs = example or ((), {})
    if kwargs:
        raise LoadError(f"{path} takes keyword inputs ({', '.join(kwargs)}); fxrewrite feeds positional tensors, "
                        "so export the model with its inputs passed by position")
    if not all(isinstance(a, torch.Tensor) for a in args):
        kinds = ", ".join(sorted({type(a).__name__ for a in args if not isinstance(a, torch.Tensor)}))
        raise LoadError(f"{path} takes inputs that are not tensors ({kinds}); fxrewrite feeds one tensor per "
                        "input, so export a wrapper whose forward takes the tensors one by one")
    return tuple(args)


def _load_pt2(path: Path, *, trust_pickle: bool) -> tuple[nn.Module, tuple[torch.Tensor, ...], str | None]:
    """The program's module, its example inputs, and the target it names (PT2_METADATA)."""
    if not is_pt2(path):
        raise LoadError(f"cannot read {path}: not a valid .pt2 archive (torch.export.save writes a zip with the "
                        "program under models/)")
    if not trust_pickle:
        check_pt2_safe(path)
    extra = {PT2_METADATA: ""}
    try:
        with logged_errors("torch.export") as causes, contextlib.redirect_stderr(io.StringIO()):
            program = torch.export.load(path, extra_files=extra)
    except Exception as exc:
        cause = causes[-1] if causes else exc  # torch logs the real cause and raises a generic error
        unregistered = re.search(r"Deserializing (\S+) in pytree is not registered", str(cause))
        if unregistered:
            raise LoadError(f"{path} returns a {unregistered[1]}, a type torch cannot rebuild without importing "
                            "its package; export a wrapper whose forward returns its tensors (a tensor or a tuple "
                            "of tensors)") from None
        raise LoadError(f"cannot read {path}: not a valid .pt2 file from torch.export.save "
                        f"({first_line(cause)})") from exc
    try:
        target = json.loads(extra[PT2_METADATA]).get("target") if extra[PT2_METADATA] else None
    except (ValueError, AttributeError):
        target = None  # another writer's file of that name
    return program.module(), _pt2_inputs(path, program.example_inputs), target


def _load_file_module(path: Path, *, trust_pickle: bool) -> nn.Module:
    obj = _torch_load(path, trust_pickle=trust_pickle, what="MODEL")
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


def _apply_weights(module: nn.Module, path: Path, *, trust_pickle: bool) -> None:
    if not path.is_file():
        raise LoadError(f"--weights {path}: no such file")
    if path.suffix == ".pt2" or is_torchscript(path):
        raise LoadError(f"--weights {path} is a whole program, not a state dict: pass it as MODEL instead")
    check_intact(path, "--weights")
    state = _state_dict_from(_torch_load(path, trust_pickle=trust_pickle, what="--weights"), path)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape: torch lists them, one per line
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = f"{len(lines)} tensor(s) of the wrong shape (first: {lines[0]})" if lines else first_line(exc)
        raise LoadError(f"--weights {path} does not fit the model: {detail}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (first: {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (first: {result.unexpected_keys[0]})")
    if problems:
        raise LoadError(f"--weights {path} does not fit the model: keys {'; '.join(problems)}")


def _example_inputs(input_shapes: Sequence[str] | None, stored: tuple[torch.Tensor, ...],
                    seed: int) -> tuple[torch.Tensor, ...]:
    if input_shapes:
        return make_inputs([parse_input_spec(s) for s in input_shapes], seed)
    return stored or make_inputs([parse_input_spec(DEFAULT_INPUT_SHAPE)], seed)


def _batch_of(inputs: tuple[torch.Tensor, ...]) -> int | None:
    return int(inputs[0].shape[0]) if inputs and inputs[0].dim() else None


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
    stored: tuple[torch.Tensor, ...] = ()
    target = None
    # programs (.pt2, TorchScript) come in inference form and refuse .eval()
    program = path.suffix == ".pt2" or (path.is_file() and is_torchscript(path))
    if path.is_file():
        check_intact(path, "MODEL")
    if path.suffix == ".pt2":
        if not path.is_file():
            raise LoadError(f"cannot load {spec!r}: no such file")
        module, stored, target = _load_pt2(path, trust_pickle=trust_pickle)
    elif program:
        module = load_torchscript(path, _example_inputs(input_shapes, (), seed))
    elif path.is_file():
        module = _load_file_module(path, trust_pickle=trust_pickle)
    elif ":" in spec:
        module = _load_callable_module(spec)
    else:
        raise LoadError(f"cannot load {spec!r}: no such file, and not of the form pkg.module:callable")
    if weights is not None:
        _apply_weights(module, Path(weights), trust_pickle=trust_pickle)
    if not program:
        module.eval()
    example_inputs = _example_inputs(input_shapes, stored, seed)
    if stored and _batch_of(example_inputs) != _batch_of(stored):
        # a .pt2 exported at one batch, asked for at another: release its batch first (frontend/batch.py)
        module, note = release_batch(module, stored)
        if note not in ("its batch dim was released", "nothing fixes its batch"):
            raise InputShapeError(f"{spec} runs at batch {_batch_of(stored)} only ({note}); pass --input-shape with "
                                  f"batch {_batch_of(stored)}, or export it with a dynamic batch")
    check_inputs(module, example_inputs)
    return LoadedModel(module, example_inputs, spec, target)
