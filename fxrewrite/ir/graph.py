"""Small graph helpers every layer reads: tensor shapes from node metadata, constants behind
parameter arguments, and how attribute values are written in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp


def format_value(value: Any) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tensor_shape(value: Any) -> tuple[int, ...] | None:
    """Shape of a tensor, or of the tensor a node produces (from ShapeProp or export metadata)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if not isinstance(value, fx.Node):
        return None
    meta = value.meta.get("tensor_meta")
    if meta is not None and hasattr(meta, "shape"):
        return tuple(int(d) for d in meta.shape)
    val = value.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(int(d) for d in val.shape)
    if value.op == "get_attr" and value.graph.owning_module is not None:
        attr = fetch_attr(value.graph.owning_module, str(value.target))
        if isinstance(attr, torch.Tensor):
            return tuple(attr.shape)
    return None


def fetch_attr(root: nn.Module, path: str) -> Any:
    """The layer, parameter, buffer or attribute at dotted `path` under `root`, or None. Layers and
    tensors are read from nn.Module's own dictionaries first: `getattr` reaches them only after a
    failed ordinary lookup, and op views ask for every node's layer."""
    target: Any = root
    for name in path.split("."):
        if isinstance(target, nn.Module):
            found = target._modules.get(name)
            if found is None:
                found = target._parameters.get(name)
            if found is None:
                found = target._buffers.get(name)
            target = found if found is not None else getattr(target, name, None)
        else:
            target = getattr(target, name, None)
    return target


def answered_upward(node: fx.Node, attribute: str, producers: Callable[[fx.Node], list[fx.Node]],
                    answer: Callable[[fx.Node, list[Any]], Any]) -> Any:
    """`answer(node, [the answers of producers(node)])`, producers answered first with a stack (a
    model's depth exceeds Python's recursion limit), each answer kept on its node under `attribute`
    so that every node is answered once."""
    stack = [node]
    while stack:
        current = stack[-1]
        if hasattr(current, attribute):
            stack.pop()
            continue
        inputs = producers(current)
        pending = [a for a in inputs if not hasattr(a, attribute)]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        setattr(current, attribute, answer(current, [getattr(a, attribute) for a in inputs]))
    return getattr(node, attribute)


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, fx.Node) and tensor_shape(value) is not None)


def ntuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if len(value) == n else tuple(int(value[0]) for _ in range(n))
    return (int(value),) * n


def norm_dim(dim: int, rank: int | None) -> int:
    return dim % rank if rank and dim < 0 else int(dim)


def tensor_rank(value: Any) -> int | None:
    shape = tensor_shape(value)
    return len(shape) if shape is not None else None


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, torch.Size)) else [value]


def constant_value(value: Any) -> torch.Tensor | None:
    """The tensor behind a parameter argument: a module's tensor, or a get_attr node's; None if computed."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, fx.Node) and value.op == "get_attr":
        tensor = fetch_attr(value.graph.owning_module, str(value.target))
        return tensor.detach() if isinstance(tensor, torch.Tensor) else None
    return None


def tensor_leaves(value: object) -> list[torch.Tensor]:
    """The tensors in a (possibly nested) result: a tuple, a dict, a model output class."""
    return [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]


def annotate_shapes(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """Record `tensor_meta` (shape, dtype) on every node by running the graph once with ShapeProp, on
    fake tensors: shapes without the arithmetic (the lowering re-annotates after every pass that
    changed the graph, and real convs at 224x224 made that most of its time). A graph fake tensors
    cannot run (a data-dependent op) is run for real."""
    # built outside the fake mode: inside it ShapeProp deep-copies the module into fake tensors, which
    # cost more than the propagation; outside it, parameters are converted as they are read
    propagation = ShapeProp(gm)
    try:
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
            propagation.propagate(*(mode.from_tensor(t) if isinstance(t, torch.Tensor) else t
                                    for t in example_inputs))
    except Exception:  # noqa: BLE001 - any failure of the fake run means: run it for real
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    return gm
