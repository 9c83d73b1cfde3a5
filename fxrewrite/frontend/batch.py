"""A free batch dimension: captured and saved graphs run at any batch size.

torch.export fixes every dimension it is not told is dynamic, and a model exported at batch 1 (the
usual `.pt2`) guards its input to batch 1 and writes 1 into its reshapes. fxrewrite distils and
verifies on batches of many inputs, so:

- capture exports a module with the batch dimension (dim 0 of every input) marked dynamic,
  tracing at batch 2 because torch.export specializes a dimension seen at size 1;
- a graph already fixed at batch B (a loaded `.pt2`) is released: its input guard is dropped and B,
  where a reshape or expand of the data writes it as the leading size, becomes the input's batch
  size read at run time, and so does a size B was folded into (B x heads in nn.MultiheadAttention's
  reshapes: `_FoldedBatches`). That is sound only if no other B was meant, so the release is
  kept only when the released graph at batch 2 gives, sample by sample, what the original gives
  at batch B (within SAME_SAMPLE_ERROR: on random inputs a deep network amplifies the rounding of
  batch-2 kernels to a few percent, efficientnet_b0 trained on MNIST 3.6% of its logits, while a
  sample that reads another differs by its whole size); otherwise the graph stays fixed and says why.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx

from fxrewrite.ir import tensor_leaves

#: the largest relative difference (per sample and output) between the released graph at batch 2
#: and the original at its batch that still counts as the same computation
SAME_SAMPLE_ERROR = 0.1

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


class _Recorder(fx.Interpreter):
    """Runs a graph and keeps every node's value, by node name."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, node: fx.Node) -> object:
        self.values[node.name] = value = super().run_node(node)
        return value


class _FoldedBatches(fx.Interpreter):
    """Runs a graph released from batch 1 at batch 2 and, where a reshape of the data fails because
    the batch was folded into a size that is not the leading one (nn.MultiheadAttention's
    view(q, [L, 1 * heads, d]) is [65, 4, 24] at batch 1), makes that size read the batch at run
    time: the size whose first slice of B (outermost or innermost) equals what the graph computes
    for the first sample alone (`single`); where several do, a size of 1 (a batch dim of its own),
    then one that is not the last (B x heads rather than heads x d x B), then B outermost.
    release_batch checks the whole graph sample by sample afterwards."""

    def __init__(self, gm: fx.GraphModule, first_input: fx.Node, single: dict[str, object]):
        super().__init__(gm)
        self.first_input, self.single, self.rewritten = first_input, single, 0

    def run_node(self, node: fx.Node) -> object:
        try:
            return super().run_node(node)
        except RuntimeError:
            folded = self._fold(node)
            if folded is None:
                raise
            return folded

    def _fold(self, node: fx.Node) -> torch.Tensor | None:
        """The node's value with the batch folded back in, its sizes rewritten; None where none fits."""
        if node.op != "call_function" or node.target not in _SIZED or node.target in _BROADCASTS:
            return None
        data, sizes = node.args[0], node.args[1]
        running, alone = self.env.get(data), self.single.get(node.name)
        recorded = data.meta.get("val") if isinstance(data, fx.Node) else None
        if recorded is None or not isinstance(running, torch.Tensor) or not isinstance(alone, torch.Tensor) \
                or not isinstance(sizes, (list, tuple)) or not all(isinstance(n, int) for n in sizes) \
                or recorded.dim() != running.dim():
            return None
        differing = [d for d, (a, b) in enumerate(zip(recorded.shape, running.shape)) if a != b]
        if len(differing) != 1 or running.shape[differing[0]] % recorded.shape[differing[0]]:
            return None
        batch = running.shape[differing[0]] // recorded.shape[differing[0]]
        found = []
        for position in range(len(sizes)):
            grown = [*sizes[:position], sizes[position] * batch, *sizes[position + 1:]]
            try:
                out = node.target(running, grown)
            except RuntimeError:
                continue
            for inner in (False, True):
                split = (sizes[position], batch) if inner else (batch, sizes[position])
                first = out.unflatten(position, split).select(position + inner, 0)
                if first.shape == alone.shape and torch.allclose(first, alone, rtol=1e-4, atol=1e-5):
                    # several may hold the first sample: prefer a dim of its own, then not the last
                    # dim (per-feature ops read it), then the batch outermost
                    found.append(((sizes[position] != 1, position == len(sizes) - 1, inner, position), out))
        if not found:
            return None
        (_, _, _, position), out = min(found, key=lambda pair: pair[0])
        self._rewrite(node, sizes, position, batch)
        return out

    def _rewrite(self, node: fx.Node, sizes: list[int], position: int, batch: int) -> None:
        graph = self.module.graph
        with graph.inserting_before(node):
            size = graph.call_function(aten.sym_size.int, (self.first_input, 0))
            self.env[size] = batch  # the nodes inserted before the one running are not run themselves
            if sizes[position] != 1:
                size = graph.call_function(operator.mul, (size, sizes[position]))
                self.env[size] = batch * sizes[position]
        node.args = (node.args[0], [*sizes[:position], size, *sizes[position + 1:]], *node.args[2:])
        self.rewritten += 1


def _release_folded(original: fx.GraphModule, released: fx.GraphModule, pair: tuple[torch.Tensor, ...]) -> int:
    """Release the batch where it was folded into other sizes (`_FoldedBatches`), in `released`, a
    copy of `original` fixed at batch 1 whose leading sizes are released already."""
    recorder = _Recorder(original)
    placeholders = [n for n in released.graph.nodes if n.op == "placeholder"]
    folding = _FoldedBatches(released, placeholders[0], recorder.values)
    try:
        with torch.no_grad():
            recorder.run(*(t[:1] for t in pair))
            folding.run(*pair)
    except Exception:  # noqa: BLE001 - what stays broken is judged by release_batch's own run
        pass
    if folding.rewritten:
        released.graph.lint()
        released.recompile()
    return folding.rewritten


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.shape != want.shape:
        return False
    if not got.is_floating_point():
        return torch.equal(got, want)
    # norm-relative, as fxrewrite.metrics measures errors (the frontend sits below rewrite)
    difference = torch.linalg.vector_norm((got - want).double())
    return bool(difference <= SAME_SAMPLE_ERROR * torch.linalg.vector_norm(want.double()))


def release_batch(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> tuple[fx.GraphModule, str]:
    """`gm` made to run at any batch when that is sound (module docstring), and a note saying what
    was done; `gm` itself, fixed, with the reason otherwise."""
    batch = int(example_inputs[0].shape[0]) if example_inputs and example_inputs[0].dim() else 0
    if not batch:
        return gm, "its first input has no batch dim"
    released = copy.deepcopy(gm)
    pair = at_batch(example_inputs, 2) if batch == 1 else tuple(t[:2] for t in example_inputs)
    pair = tuple(torch.randn_like(t) if t.is_floating_point() else t for t in pair)
    changed = _release(released, batch)
    if batch == 1:
        changed += _release_folded(gm, released, pair)
    if not changed:
        return gm, "nothing fixes its batch"
    try:
        with torch.no_grad():
            together = tensor_leaves(released(*pair))
            apart = [tensor_leaves(gm(*at_batch(tuple(t[i:i + 1] for t in pair), batch))) for i in range(2)]
        same = all(len(part) == len(together) and all(
            _same(whole[i:i + 1], piece[:1]) for whole, piece in zip(together, part))
            for i, part in enumerate(apart))
    except Exception as exc:  # a released graph that cannot run at batch 2 stays fixed
        return gm, f"at batch 2 it fails ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    if not same:
        return gm, "at batch 2 its samples change each other's results"
    return released, "its batch dim was released"
