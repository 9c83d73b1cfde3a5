"""`Rewriter`: builds a replacement's nodes before an anchor node, each with its shape metadata
(computed on fake tensors, so building costs no real arithmetic, and memoized by what the result's
shape depends on: a decomposition builds the same few layers on the same shapes many times, and a
fake conv with real weights costs a millisecond of weight conversion)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import TensorMetadata, _extract_tensor_metadata

#: result metadata by (callable, configuration, argument shapes); cleared when it grows past the limit
_SHAPE_MEMO: dict[tuple, Any] = {}
SHAPE_MEMO_LIMIT = 100_000


class Rewriter:
    """Builds replacement nodes before an anchor node and gives each its shape metadata."""

    def __init__(self, gm: fx.GraphModule, fake_mode: FakeTensorMode | None = None, target: Any = None):
        self.gm = gm
        #: the Target being lowered to, when there is one (for limits such as in_channels_max)
        self.target = target
        self.created: list[fx.Node] = []
        #: what the rewrite wants reported (e.g. the cost of what it produced)
        self.notes: list[str] = []
        self._fake = fake_mode or FakeTensorMode(allow_non_fake_inputs=True)
        # one fake value per node read: the g pieces of a split would otherwise rebuild all g results each
        self._fakes: dict[fx.Node, Any] = {}

    def module(self, anchor: fx.Node, prefix: str, module: nn.Module, *args: Any) -> fx.Node:
        name = self._unique(prefix)
        self.gm.add_submodule(name, module)
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.call_module(name, args)
        # a built-in leaf layer's extra_repr states every setting its output shape depends on
        builtin = type(module).__module__.startswith("torch.nn.modules") and not any(module.children())
        key = (type(module), module.extra_repr()) if builtin else None
        return self._annotate(node, lambda *xs: module(*xs), key)

    def function(self, anchor: fx.Node, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> fx.Node:
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.call_function(fn, args, kwargs)
        return self._annotate(node, lambda *xs, **kw: fn(*xs, **kw), fn)

    def method(self, anchor: fx.Node, name: str, receiver: fx.Node, *args: Any) -> fx.Node:
        """A tensor method call (`x.float()`): a graph traced again later sees a method, which its
        tracer records, where a call of the unbound `torch.Tensor.float` fails on a proxy."""
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.call_method(name, (receiver, *args))
        return self._annotate(node, lambda x, *rest: getattr(x, name)(*rest), ("method", name))

    def constant(self, anchor: fx.Node, prefix: str, value: torch.Tensor) -> fx.Node:
        """A get_attr node reading `value`, stored on the graph module as a buffer."""
        name = self._unique(prefix)
        self.gm.register_buffer(name, value.detach().clone())
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.get_attr(name)
        node.meta["tensor_meta"] = _extract_tensor_metadata(value)
        node.meta["type"] = type(value)
        return node

    def _unique(self, prefix: str) -> str:
        # the next free index per prefix lives on the graph module, so naming stays O(1) per rewrite
        counters = self.gm.meta.setdefault("fxrewrite_next_name", collections.Counter())
        base = prefix.replace(".", "_")
        while hasattr(self.gm, f"{base}_{counters[base]}"):
            counters[base] += 1
        counters[base] += 1
        return f"{base}_{counters[base] - 1}"

    def _annotate(self, node: fx.Node, run: Callable[..., Any], key: Any = None) -> fx.Node:
        memo_key = _memo_key(key, node) if key is not None else None
        if memo_key is not None and memo_key in _SHAPE_MEMO:
            node.meta["tensor_meta"], node.meta["type"] = _SHAPE_MEMO[memo_key]
            self.created.append(node)
            return node

        def empty(meta: TensorMetadata) -> torch.Tensor:
            return torch.empty(meta.shape, dtype=meta.dtype)

        def fake(arg: fx.Node) -> Any:
            if arg not in self._fakes:
                meta = arg.meta["tensor_meta"]
                # TensorMetadata is itself a tuple: an op with several results records a tuple of them
                self._fakes[arg] = empty(meta) if isinstance(meta, TensorMetadata) else tuple(map(empty, meta))
            return self._fakes[arg]

        with self._fake, torch.no_grad():  # as ShapeProp records them: requires_grad=False
            args = fx.node.map_arg(node.args, fake)
            kwargs = fx.node.map_arg(node.kwargs, fake)
            result = run(*args, **kwargs)
        # an op with several results (split) gets one metadata per result, as ShapeProp records them
        node.meta["tensor_meta"] = fx.node.map_aggregate(
            result, lambda value: _extract_tensor_metadata(value) if isinstance(value, torch.Tensor) else value)
        node.meta["type"] = type(result)
        if memo_key is not None:
            if len(_SHAPE_MEMO) >= SHAPE_MEMO_LIMIT:
                _SHAPE_MEMO.clear()
            _SHAPE_MEMO[memo_key] = node.meta["tensor_meta"], node.meta["type"]
        self.created.append(node)
        return node


def _memo_key(callable_key: Any, node: fx.Node) -> tuple | None:
    """What `node`'s result shape depends on besides its callable: its arguments, each node among
    them by its recorded layout; None when an argument is a tensor or not hashable (not memoized)."""
    if _holds_tensor((node.args, node.kwargs)):
        return None

    def describe(arg: fx.Node) -> Any:
        meta = arg.meta["tensor_meta"]
        # stride and memory format included: a fake result's layout follows its inputs'
        return ("node", *((m.shape, m.dtype, m.stride, m.memory_format)
                          for m in ((meta,) if isinstance(meta, TensorMetadata) else meta)))

    key = (callable_key, fx.node.map_arg(node.args, describe),
           tuple(sorted((name, fx.node.map_arg(value, describe)) for name, value in node.kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False
