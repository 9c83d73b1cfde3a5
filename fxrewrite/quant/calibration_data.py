"""Calibration data for distillation and quantization: inputs only, labels are never read.

`--calib` takes a folder of images, a `.npy` array (read with allow_pickle=False), a `.pt` tensor
(read with weights_only=True), `pkg.module:callable` or `file.py:callable` returning an iterable of inputs (of batches
or of single samples; from (input, label) pairs only the input is kept), or `synthetic` for
standard-normal inputs (token ids: uniform over the example input's range), which must be asked for
by name. Images are decoded by torchvision, resized (with Pillow) to the model's input size, given
its channel count and scaled to [0, 1]; any other preprocessing belongs in a callable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fxrewrite.errors import InputShapeError, LoadError
from fxrewrite.frontend.inputs import check_allocation
from fxrewrite.frontend.archives import check_intact
from fxrewrite.frontend.load import import_callable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
HELD_OUT_FRACTION = 0.2
#: how many inputs `synthetic` makes when no size is given
SYNTHETIC_SAMPLES = 1024
SOURCES_HELP = ("a folder of images, a .npy or .pt tensor, pkg.module:callable or file.py:callable returning "
                "inputs, or `synthetic` for random inputs")


@dataclass(frozen=True)
class CalibrationData:
    train: tuple[torch.Tensor, ...]
    held_out: tuple[torch.Tensor, ...]
    source: str
    #: inputs given but left out by the size cap
    dropped: int = 0

    @property
    def samples(self) -> tuple[int, int]:
        return sum(len(b) for b in self.train), sum(len(b) for b in self.held_out)


def _images(folder: Path, shape: tuple[int, ...]) -> torch.Tensor:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LoadError(f"--calib {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise InputShapeError(f"--calib {folder}: images feed a 1- or 3-channel NCHW input; the model takes {shape}")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                pixels = image.convert("L" if shape[1] == 1 else "RGB").resize(
                    (shape[3], shape[2]), Image.Resampling.BILINEAR)
        except (OSError, ValueError) as exc:
            raise LoadError(f"--calib {file}: not a readable image ({exc})") from None
        array = np.asarray(pixels, dtype=np.float32).reshape(shape[2], shape[3], shape[1]) / 255
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(images)


def _from_callable(spec: str) -> list[torch.Tensor]:
    factory = import_callable(spec, "--calib")
    try:
        items = list(factory())
    except Exception as exc:
        raise LoadError(f"--calib {spec}: calling it failed: {type(exc).__name__}: {exc}") from None
    inputs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise LoadError(f"--calib {spec}: it must return an iterable of tensors (or of (input, label) pairs)")
    return inputs


def _stack(inputs: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Single samples are stacked, batches concatenated."""
    sample = tuple(shape[1:])
    batches = [t[None] if tuple(t.shape) == sample else t for t in inputs]
    if any(tuple(b.shape[1:]) != sample for b in batches):
        odd = next(tuple(b.shape) for b in batches if tuple(b.shape[1:]) != sample)
        raise InputShapeError(f"--calib: an input of shape {odd}, but the model takes {shape} (any batch size)")
    return torch.cat(batches)


def _synthetic(example: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Standard-normal inputs; for integer inputs (token ids), ids drawn uniformly from the range the
    example covers, as nothing tells the vocabulary (an id outside it would fail in the embedding)."""
    shape = (size or SYNTHETIC_SAMPLES, *example.shape[1:])
    check_allocation(shape, example.dtype, f"--calib synthetic --calib-size {shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    if example.is_floating_point():
        return torch.randn(shape, generator=generator)
    return torch.randint(int(example.min()), int(example.max()) + 1, shape, generator=generator)


def _read(spec: str, example: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    path, shape = Path(spec), tuple(example.shape)
    if spec == "synthetic":
        return _synthetic(example, size, seed)
    if ":" in spec and not path.exists():
        return _stack(_from_callable(spec), shape)
    if not path.exists():
        raise LoadError(f"--calib {spec}: no such file or folder; pass {SOURCES_HELP}")
    if path.is_dir():
        return _images(path, shape)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
            raise LoadError(f"--calib {path}: not a readable .npy array without pickles "
                            f"({exc or type(exc).__name__})") from None
        if array.dtype.kind not in "biuf":
            raise LoadError(f"--calib {path}: holds {array.dtype} values; inputs are real numbers (bool, integer or "
                            "floating point)")
        return torch.from_numpy(array)
    if path.suffix == ".pt":
        check_intact(path, "--calib")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LoadError(f"--calib {path}: not a tensor file loadable with weights_only=True "
                            f"({type(exc).__name__})") from None
        if not isinstance(data, torch.Tensor):
            raise LoadError(f"--calib {path}: holds a {type(data).__name__}, not one tensor of inputs")
        return data
    raise LoadError(f"--calib {spec}: unsupported file type {path.suffix!r}; pass {SOURCES_HELP}")


def load_calibration(spec: str | torch.Tensor, example: torch.Tensor, size: int | None, batch_size: int,
                     seed: int = 0) -> CalibrationData:
    """Every input (or the first `size`) shaped like `example` (its batch dim aside), split into
    training batches and a held-out fifth that judges training. `spec` names a source (module
    docstring) or is the inputs."""
    shape = tuple(example.shape)
    if isinstance(spec, torch.Tensor):
        data, spec = spec, f"a tensor of {len(spec)} inputs"
    else:
        data = _read(spec, example, size, seed)
    if tuple(data.shape[1:]) != shape[1:]:
        raise InputShapeError(f"--calib {spec}: samples of shape {tuple(data.shape[1:])}, but the model takes "
                              f"{shape[1:]} (after the batch dim)")
    if data.is_complex():  # casting to the model's real dtype would drop the imaginary parts
        raise LoadError(f"--calib {spec}: holds {data.dtype} values; inputs are real numbers")
    dropped = max(0, len(data) - size) if size is not None else 0
    data = data[:size].to(example.dtype)
    if data.is_floating_point():
        bad = (~torch.isfinite(data.flatten(1))).any(1).nonzero().flatten().tolist()
        if bad:
            raise LoadError(f"--calib {spec}: {len(bad)} of {len(data)} samples hold NaN or infinite values (the "
                            f"first: sample {bad[0]}); remove or repair them")
    if len(data) < 2:
        raise LoadError(f"--calib {spec}: {len(data)} samples; at least 2 are needed (one held out)")
    held = max(1, int(len(data) * HELD_OUT_FRACTION))
    train, held_out = data[:-held], data[-held:]
    return CalibrationData(tuple(train.split(batch_size)), tuple(held_out.split(batch_size)), spec, dropped)
