"""A free batch dimension: captured and saved graphs run at any batch size.

torch.export fixes every dimension it is not told is dynamic, and a model exported at batch 1 (the
usual `.pt2`) guards its input to batch 1 and writes 1 into its reshapes. fxrewrite distils and
verifies on batches of many inputs, so:

- capture exports a module with the batch dimension (dim 0 of every input) marked dynamic,
  tracing at batch 2 because torch.export specializes a dimension seen at size 1;
- a graph already fixed at batch B (a loaded `.pt2`) is released: its input guard is dropped and B,
  where a reshape or expand of the data writes it as the leading size, becomes the input's batch
  size read at run time. That is sound only if no other leading B was meant, so the release is
  kept only when the released graph at batch 2 gives, sample by sample, what the original gives
  at batch B; otherwise the graph stays fixed and says why.
"""

from __future__ import annotations

import copy

import torch
from torch import fx

from fxrewrite.ir import tensor_leaves

aten = torch.ops.aten

#: GraphModule.meta key: why the graph runs at its example batch size only (absent when it is free)
FIXED_BATCH = "fxrewrite_fixed_batch"

#: ops whose second argument lists the result's sizes, leading (batch) size first
_SIZED = frozenset({aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default})
#: what a static export writes where the batch size goes; expand also broadcasts parameters to it
_BROADCASTS = frozenset({aten.expand.default})


def at_batch(inputs: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """The example inputs repeated (or cut) along dim 0 to `batch` samples."""
    return tuple(t[:1].expand(batch, *t.shape[1:]).clone() if t.dim() else t for t in inputs)


def batch_dims(inputs: tuple[torch.Tensor, ...]) -> tuple[dict[int, torch.export.Dim] | None, ...]:
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} if t.dim() else None for t in inputs)


def _reads_input(gm: fx.GraphModule) -> set[fx.Node]:
    reads: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(i in reads for i in node.all_input_nodes):
            reads.add(node)
    return reads


def _release(gm: fx.GraphModule, batch: int) -> int:
    """Drop the input guard and read the batch size at run time where it was written in; in place."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return 0
    data = _reads_input(gm)
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and str(node.target) == "_guards_fn":
            gm.graph.erase_node(node)
            changed += 1
        elif node.op == "call_function" and node.target in _SIZED and len(node.args) > 1:
            sizes = node.args[1]
            if not (isinstance(sizes, (list, tuple)) and sizes and sizes[0] == batch):
                continue
            if node.args[0] not in data and node.target not in _BROADCASTS:
                continue
            with gm.graph.inserting_before(node):
                size = gm.graph.call_function(aten.sym_size.int, (placeholders[0], 0))
            node.args = (node.args[0], [size, *sizes[1:]], *node.args[2:])
            changed += 1
    gm.graph.lint()
    gm.recompile()
    return changed


def release_batch(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> tuple[fx.GraphModule, str]:
    """`gm` made to run at any batch when that is sound (module docstring), and a note saying what
    was done; `gm` itself, fixed, with the reason otherwise."""
    batch = int(example_inputs[0].shape[0]) if example_inputs and example_inputs[0].dim() else 0
    if not batch:
        return gm, "its first input has no batch dim"
    released = copy.deepcopy(gm)
    if not _release(released, batch):
        return gm, "nothing fixes its batch"
    pair = at_batch(example_inputs, 2) if batch == 1 else tuple(t[:2] for t in example_inputs)
    pair = tuple(torch.randn_like(t) if t.is_floating_point() else t for t in pair)
    try:
        with torch.no_grad():
            together = tensor_leaves(released(*pair))
            apart = [tensor_leaves(gm(*at_batch(tuple(t[i:i + 1] for t in pair), batch))) for i in range(2)]
        same = all(len(part) == len(together) and all(
            torch.allclose(whole[i:i + 1], piece[:1], rtol=1e-4, atol=1e-5) for whole, piece in zip(together, part))
            for i, part in enumerate(apart))
    except Exception as exc:  # a released graph that cannot run at batch 2 stays fixed
        return gm, f"at batch 2 it fails ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    if not same:
        return gm, "at batch 2 its samples change each other's results"
    return released, "its batch dim was released"
