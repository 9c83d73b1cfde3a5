"""Reading model archives without running code from them: `.pt2` files and TorchScript archives.

A `.pt2` (torch.export.save) is a zip of JSON (the graph, the payload configs), raw tensor bytes,
and pickles: the example inputs, and weights or constants saved with `use_pickle`. torch's loader
unpickles those with `weights_only=False` where the safe loader fails, and loads custom and opaque
objects with plain pickle, so a crafted archive runs code on load. Before torch reads one, every
pickle in it must load with `weights_only=True` and no custom object may be in it; otherwise the
file is refused unless the user passed --trust-pickle.

A TorchScript archive (torch.jit.save) holds TorchScript code and tensors; its unpickler restores
only TorchScript types, so it runs no Python from the file. It is converted to an ExportedProgram
with torch's TorchScript converter, and the conversion is checked against the archive's own results.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from fxrewrite.errors import LoadError, first_line
from fxrewrite.frontend.capture import quiet_torch
from fxrewrite.frontend.inputs import check_inputs

#: payload configs inside a .pt2, whose entries say which members are pickles
_CONFIG_FOLDERS = ("data/weights", "data/constants")
#: constants loaded by plain pickle or TorchScript's pickle, however they were saved
_OBJECT_PREFIXES = ("custom_obj", "opaque_obj")

TRUST_ADVICE = ("unpickling runs code from the file, so fxrewrite refuses it by default; if you trust the file, "
                "add --trust-pickle")


def _inner(name: str) -> str:
    """A member's path below the archive's top folder (`model/data/x` -> `data/x`)."""
    parts = PurePosixPath(name).parts
    return "/".join(parts[1:]) if len(parts) > 1 else name


def _pickled_members(archive: zipfile.ZipFile) -> tuple[list[str], list[str]]:
    """(members torch unpickles, members holding custom or opaque objects) of a .pt2."""
    names = {_inner(n): n for n in archive.namelist()}
    pickles, objects = [], []
    raw: set[str] = set()
    for inner, full in names.items():
        folder = str(PurePosixPath(inner).parent)
        if folder in _CONFIG_FOLDERS and inner.endswith("_config.json"):
            entries = json.loads(archive.read(full)).get("config", {})
            for meta in entries.values():
                member = f"{folder}/{meta.get('path_name', '')}"
                if meta.get("path_name", "").startswith(_OBJECT_PREFIXES):
                    objects.append(names.get(member, member))
                elif meta.get("use_pickle"):
                    pickles.append(names.get(member, member))
                else:
                    raw.add(member)
    for inner, full in names.items():
        # sample inputs, legacy weight/constant files: anything under data/ that is neither a config nor raw bytes
        if inner.startswith("data/") and not inner.endswith(".json") and inner not in raw and full not in pickles \
                and full not in objects:
            pickles.append(full)
    return pickles, objects


def check_pt2_safe(path: Path) -> None:
    """Refuse (LoadError) a .pt2 whose loading would unpickle anything beyond tensors and plain containers."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles, objects = _pickled_members(archive)
            if objects:
                raise LoadError(f"{path} holds {len(objects)} custom Python object(s) ({_inner(objects[0])}); "
                                f"{TRUST_ADVICE}")
            for member in pickles:
                try:
                    torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
                except Exception:
                    raise LoadError(f"{path}: {_inner(member)} holds pickled Python objects beyond tensors; "
                                    f"{TRUST_ADVICE}") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise LoadError(f"cannot read {path}: not a valid .pt2 archive ({type(exc).__name__}: {exc})") from None


def check_intact(path: Path, what: str) -> None:
    """Refuse (LoadError) a zip archive (a .pt2, a TorchScript archive, a torch.save file) whose members
    fail their CRC check: torch's readers do not check it, so a damaged weight would load silently."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise LoadError(f"cannot read {what} {path}: a damaged zip archive ({first_line(exc)})") from None
    if damaged is not None:
        raise LoadError(f"{what} {path} is damaged: its member {_inner(damaged)} fails its CRC check (a truncated or "
                        "altered copy); copy or save the file again")


def _members(path: Path) -> set[str]:
    """The members of a zip below its top folder; empty for anything that is not a zip."""
    if not zipfile.is_zipfile(path):
        return set()
    with zipfile.ZipFile(path) as archive:
        return {_inner(n) for n in archive.namelist()}


def is_pt2(path: Path) -> bool:
    """A zip written by torch.export.save: its program is JSON under models/."""
    return any(n.startswith("models/") and n.endswith(".json") for n in _members(path))


def is_torchscript(path: Path) -> bool:
    """A zip written by torch.jit.save: it has a code/ folder and constants.pkl beside data.pkl."""
    inner = _members(path)
    return "constants.pkl" in inner and any(n.startswith("code/") for n in inner)


def _restore_parameters(module: nn.Module, names: set[str]) -> None:
    """Make the converted module's buffers that were the archive's parameters (`names`) parameters again:
    the converter keeps every tensor as a buffer, and ExecuTorch's quantizer, which folds batch norms into
    the convs' parameters, then fails on a buffer of the parameter's name (and specialises shapes
    wrongly), where the same model from Python compiles."""
    for name, tensor in list(module.named_buffers()):
        if name in names:
            owner_name, _, attribute = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            delattr(owner, attribute)
            owner.register_parameter(attribute, nn.Parameter(tensor))


def load_torchscript(path: Path, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """The archive's program converted to a module torch.export can capture, checked to compute what
    the archive computes on `example_inputs` (which the archive itself must accept: InputShapeError)."""
    try:
        with quiet_torch(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated: converting is the way out
            scripted = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise LoadError(f"cannot read {path}: a TorchScript archive that torch.jit.load rejects "
                        f"({first_line(exc)})") from None
    check_inputs(scripted, example_inputs)  # a wrong --input-shape is said as such, not as a failed conversion
    from torch._export.converter import TS2EPConverter  # torch's own TorchScript -> ExportedProgram converter

    try:
        with quiet_torch():
            program = TS2EPConverter(scripted, example_inputs).convert()
            module = program.module()
            got, want = module(*example_inputs), scripted(*example_inputs)
    except Exception as exc:
        raise LoadError(f"{path} is a TorchScript archive that torch's converter cannot turn into a graph "
                        f"({first_line(exc)}); export the model with torch.export.save instead, or pass its "
                        "Python class as pkg.module:callable with --weights") from None
    _restore_parameters(module, {name for name, _ in scripted.named_parameters()})
    got, want = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
    if not got or len(got) != len(want) or any(not torch.allclose(g, w, rtol=1e-4, atol=1e-5)
                                               for g, w in zip(got, want)):
        raise LoadError(f"{path}: the TorchScript program converted to a graph does not compute what the archive "
                        "does on the example inputs; export the model with torch.export.save instead")
    return module
