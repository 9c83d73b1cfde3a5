"""`Rewriter`: builds a replacement's nodes before an anchor node, each with its shape metadata
(computed on fake tensors, so building costs no real arithmetic)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import TensorMetadata, _extract_tensor_metadata


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
        return self._annotate(node, lambda *xs: module(*xs))

    def function(self, anchor: fx.Node, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> fx.Node:
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.call_function(fn, args, kwargs)
        return self._annotate(node, lambda *xs, **kw: fn(*xs, **kw))

    def constant(self, anchor: fx.Node, prefix: str, value: torch.Tensor) -> fx.Node:
        """A get_attr node reading `value`, stored on the graph module as a buffer."""
        name = self._unique(prefix)
        self.gm.register_buffer(name, value.detach().clone())
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.get_attr(name)
        node.meta["tensor_meta"] = _extract_tensor_metadata(value)
        return node

    def _unique(self, prefix: str) -> str:
        # the next free index per prefix lives on the graph module, so naming stays O(1) per rewrite
        counters = self.gm.meta.setdefault("fxrewrite_next_name", collections.Counter())
        base = prefix.replace(".", "_")
        while hasattr(self.gm, f"{base}_{counters[base]}"):
            counters[base] += 1
        counters[base] += 1
        return f"{base}_{counters[base] - 1}"

    def _annotate(self, node: fx.Node, run: Callable[..., Any]) -> fx.Node:
        def empty(meta: TensorMetadata) -> torch.Tensor:
            return torch.empty(meta.shape, dtype=meta.dtype)

        def fake(arg: fx.Node) -> Any:
            if arg not in self._fakes:
                meta = arg.meta["tensor_meta"]
                # TensorMetadata is itself a tuple: an op with several results records a tuple of them
                self._fakes[arg] = empty(meta) if isinstance(meta, TensorMetadata) else tuple(map(empty, meta))
            return self._fakes[arg]

        with self._fake:
            args = fx.node.map_arg(node.args, fake)
            kwargs = fx.node.map_arg(node.kwargs, fake)
            result = run(*args, **kwargs)
        # an op with several results (split) gets one metadata per result, as ShapeProp records them
        node.meta["tensor_meta"] = fx.node.map_aggregate(
            result, lambda value: _extract_tensor_metadata(value) if isinstance(value, torch.Tensor) else value)
        self.created.append(node)
        return node
