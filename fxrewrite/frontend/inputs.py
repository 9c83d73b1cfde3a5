"""Example inputs: parsing --input-shape, and random inputs checked to fit this machine."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from torch import nn

from fxrewrite.errors import InputShapeError, LoadError, first_line

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


#: the largest integer torch takes for a size or a seed
INT64_MAX = 2**63 - 1


def memory_bytes() -> int:
    """The machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_allocation(shape: Sequence[int], dtype: torch.dtype, what: str) -> None:
    """Refuse a tensor that cannot fit in half of this machine's memory, before torch tries to allocate it."""
    size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if size > memory_bytes() // 2:
        raise LoadError(f"{what}: a tensor of shape {'x'.join(map(str, shape))} needs {size / 2**30:,.1f} GiB, more "
                        f"than half of this machine's {memory_bytes() / 2**30:.0f} GiB")


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``1,3,224,224`` or ``1,128:int64`` into an InputSpec."""
    dims_text, _, dtype_text = text.partition(":")
    try:
        shape = tuple(int(d) for d in re.split(r"[,x]", dims_text.strip().strip(",")))
    except ValueError:
        raise LoadError(f"bad --input-shape {text!r}: expected comma-separated integers such as 1,3,224,224") from None
    if not shape or any(d <= 0 or d > INT64_MAX for d in shape):
        raise LoadError(f"bad --input-shape {text!r}: every dimension must be a positive integer below 2**63")
    dtype = torch.float32
    if dtype_text:
        if dtype_text not in _DTYPES:
            raise LoadError(f"bad --input-shape {text!r}: dtype must be one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype_text]
    return InputSpec(shape, dtype)


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= INT64_MAX:
        raise LoadError(f"--seed {seed}: give a whole number from 0 to 2**63-1")


def make_inputs(specs: Sequence[InputSpec], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random example inputs: standard normal floats, integers in [0, INT_INPUT_HIGH)."""
    check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        check_allocation(spec.shape, spec.dtype, f"--input-shape {spec}")
        if spec.dtype.is_floating_point:
            tensors.append(torch.randn(spec.shape, generator=generator).to(spec.dtype))
        elif spec.dtype == torch.bool:
            tensors.append(torch.ones(spec.shape, dtype=torch.bool))
        else:
            tensors.append(torch.randint(0, INT_INPUT_HIGH, spec.shape, generator=generator, dtype=spec.dtype))
    return tuple(tensors)


#: how TorchScript's interpreter begins an error whose cause is its last line
TORCHSCRIPT_FAILED = "The following operation failed in the TorchScript interpreter"


def check_inputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Run the module once so that a wrong --input-shape fails here, with a clear message."""
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as exc:
        shapes = ", ".join(str(InputSpec(tuple(t.shape), t.dtype)) for t in inputs) or "no inputs"
        # TorchScript's interpreter puts its own traceback first and the failure last
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = lines[-1][:300] if first_line(exc).startswith(TORCHSCRIPT_FAILED) else first_line(exc)
        raise InputShapeError(
            f"the model fails on example inputs of shape {shapes}: {cause}; "
            "pass the shape the model expects with --input-shape (repeat it for several inputs)"
        ) from exc
