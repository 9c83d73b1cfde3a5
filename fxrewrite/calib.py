"""Calibration data for distillation and quantization: inputs only, labels are never read.

`--calib` takes a folder of images, a `.npy` array (read with allow_pickle=False), a `.pt` tensor
(read with weights_only=True), `pkg.module:callable` returning an iterable of inputs (of batches
or of single samples; from (input, label) pairs only the input is kept), or `synthetic` for
standard-normal inputs, which must be asked for by name. Images are decoded by torchvision, resized
to the model's input size, given its channel count and scaled to [0, 1]; any other preprocessing
belongs in a callable.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fxrewrite.errors import InputShapeError, LoadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
HELD_OUT_FRACTION = 0.2
SOURCES_HELP = ("a folder of images, a .npy or .pt tensor, pkg.module:callable returning inputs, "
                "or `synthetic` for random inputs")


@dataclass(frozen=True)
class CalibrationData:
    train: tuple[torch.Tensor, ...]
    held_out: tuple[torch.Tensor, ...]
    source: str

    @property
    def samples(self) -> tuple[int, int]:
        return sum(len(b) for b in self.train), sum(len(b) for b in self.held_out)


def _images(folder: Path, shape: tuple[int, ...]) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LoadError(f"--calib {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise InputShapeError(f"--calib {folder}: images feed a 1- or 3-channel NCHW input; the model takes {shape}")
    mode = ImageReadMode.GRAY if shape[1] == 1 else ImageReadMode.RGB
    images = []
    for file in files:
        try:
            image = decode_image(str(file), mode=mode)
        except (RuntimeError, ValueError) as exc:
            raise LoadError(f"--calib {file}: not a readable image ({exc})") from None
        images.append(F.interpolate(image[None].float() / 255, size=shape[2:], mode="bilinear", antialias=True))
    return torch.cat(images)


def _from_callable(spec: str) -> torch.Tensor:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        items = list(factory())
    except Exception as exc:
        raise LoadError(f"--calib {spec}: calling it failed: {type(exc).__name__}: {exc}") from None
    inputs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise LoadError(f"--calib {spec}: it must return an iterable of tensors (or of (input, label) pairs)")
    return inputs


def _stack(inputs: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    sample = tuple(shape[1:])
    if all(tuple(t.shape) == sample for t in inputs):
        return torch.stack(inputs)
    return torch.cat(inputs)


def load_calibration(spec: str, example: torch.Tensor, size: int, batch_size: int, seed: int = 0) -> CalibrationData:
    """Up to `size` inputs shaped like `example` (its batch dim aside), split into training batches
    and a held-out fifth for the report."""
    shape = tuple(example.shape)
    path = Path(spec)
    if spec == "synthetic":
        data = torch.randn((size, *shape[1:]), generator=torch.Generator().manual_seed(seed))
    elif path.is_dir():
        data = _images(path, shape)
    elif path.suffix == ".npy":
        try:
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise LoadError(f"--calib {path}: not a readable .npy array without pickles ({exc})") from None
    elif path.suffix == ".pt":
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LoadError(f"--calib {path}: not a tensor file loadable with weights_only=True "
                            f"({type(exc).__name__})") from None
        if not isinstance(data, torch.Tensor):
            raise LoadError(f"--calib {path}: holds a {type(data).__name__}, not one tensor of inputs")
    elif ":" in spec and not path.exists():
        data = _stack(_from_callable(spec), shape)
    else:
        raise LoadError(f"--calib {spec}: no such file or folder; pass {SOURCES_HELP}")
    if tuple(data.shape[1:]) != shape[1:]:
        raise InputShapeError(f"--calib {spec}: samples of shape {tuple(data.shape[1:])}, but the model takes "
                              f"{shape[1:]} (after the batch dim)")
    data = data[:size].to(example.dtype)
    if len(data) < 2:
        raise LoadError(f"--calib {spec}: {len(data)} samples; at least 2 are needed (one held out)")
    held = max(1, int(len(data) * HELD_OUT_FRACTION))
    train, held_out = data[:-held], data[-held:]
    return CalibrationData(tuple(train.split(batch_size)), tuple(held_out.split(batch_size)), spec)
