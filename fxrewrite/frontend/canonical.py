"""The canonical form of an exported graph: what the rest of fxrewrite reads.

torch.export's graphs keep two things symbolic tracing never shows:

- in-place ATen ops (`aten.hardtanh_`, `aten.add_`, `aten.dropout_`): where the mutated tensor is a
  fresh intermediate (not an input, a parameter or a view of another tensor), `y = f_(x)` is
  rewritten as the functional `y = f(x)` and every later reader of `x` reads `y`, which is what it
  saw before; any other in-place op stays and is reported with its reason;
- the generic `aten.convolution` (what TorchScript's converter writes): as the `conv1d`, `conv2d` or
  `conv_transpose2d` it is, by its weight's rank and its `transposed` flag;
- tensors computed from constants alone (Swin's shifted-window mask: `new_zeros`, slices filled in
  place, `masked_fill`): evaluated once on the example inputs and stored as buffers, since they are
  the same for every input. Parameters are never folded, so they stay trainable and counted.

run_decompositions(), torch's own functionalization, is not used: it also lowers batch_norm,
layer_norm and attention to their native forms with several outputs, which no target describes.
"""

from __future__ import annotations

import torch
from torch import fx

from fxrewrite.ir import op_view, tensor_leaves

aten = torch.ops.aten

#: ops whose result depends on their input's shape and dtype only, not on its values
#: ATen ops that read their first argument for its shape, dtype and device alone
METADATA_ONLY = frozenset({aten.new_zeros.default, aten.new_ones.default, aten.new_full.default,
                            aten.new_empty.default, aten.zeros_like.default, aten.ones_like.default,
                            aten.full_like.default, aten.empty_like.default, aten.sym_size.int})


def _functional_form(target: object) -> torch._ops.OpOverload | None:
    """`aten.relu_.default` -> `aten.relu.default`; None for anything that is not an in-place ATen op."""
    if not isinstance(target, torch._ops.OpOverload) or target.namespace != "aten":
        return None
    name = target._schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(aten, name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _is_view(node: fx.Node) -> bool:
    """A view op: its result shares its input's storage (in-place ops, which write it, are not views)."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return False
    returns = node.target._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


def _aliases(node: fx.Node) -> tuple[fx.Node, set[fx.Node]]:
    """The tensor `node` is a view of (itself if none), and every view of that tensor."""
    root = node
    while _is_view(root) and isinstance(root.args[0], fx.Node):
        root = root.args[0]
    aliases, frontier = {root}, [root]
    while frontier:
        for user in frontier.pop().users:
            if _is_view(user) and user not in aliases:
                aliases.add(user)
                frontier.append(user)
    return root, aliases


def functionalize_in_place(gm: fx.GraphModule) -> int:
    """Rewrite safe in-place ops as functional ones (module docstring); returns how many. Safe: the
    mutated storage belongs to a tensor the graph computed, and after the op nothing reads it through
    another name than the mutated one (whose readers then read the op's result)."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    rewritten = 0
    for node in list(gm.graph.nodes):
        functional = _functional_form(node.target) if node.op == "call_function" else None
        mutated = node.args[0] if node.args else None
        if functional is None or not isinstance(mutated, fx.Node):
            continue
        root, aliases = _aliases(mutated)
        if root.op != "call_function":
            continue
        later = [(alias, user) for alias in aliases for user in alias.users if order[user] > order[node]]
        if any(alias is not mutated for alias, _ in later):
            continue
        for _, reader in later:
            reader.replace_input_with(mutated, node)
        node.target = functional
        rewritten += 1
    if rewritten:
        gm.recompile()
    return rewritten


def specialize_convolutions(gm: fx.GraphModule) -> int:
    """`aten.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)` as
    the named convolution with the same arguments; returns how many."""
    specialized = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target != aten.convolution.default:
            continue
        x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = node.args
        rank = weight.meta["val"].dim() if isinstance(weight, fx.Node) and "val" in weight.meta else None
        if not transposed and rank in (3, 4):
            node.target = aten.conv2d.default if rank == 4 else aten.conv1d.default
            node.args = (x, weight, bias, stride, padding, dilation, groups)
        elif transposed and rank == 4:
            node.target = aten.conv_transpose2d.input
            node.args = (x, weight, bias, stride, padding, output_padding, groups, dilation)
        else:
            continue
        specialized += 1
    if specialized:
        gm.recompile()
    return specialized


def _constant_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value is the same for every input and that read no parameter."""
    parameters = {name for name, _ in gm.named_parameters()}
    constant: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            if str(node.target) not in parameters:
                constant.add(node)
        elif node.op in ("call_function", "call_method") and op_view(node).kind != "assert":
            inputs = node.all_input_nodes if node.target not in METADATA_ONLY else node.all_input_nodes[1:]
            if all(i in constant for i in inputs):
                constant.add(node)
    return constant


def fold_constants(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> int:
    """Store every input-independent tensor that a computing node reads as a buffer; returns how many."""
    constant = _constant_nodes(gm)
    frontier = [n for n in gm.graph.nodes if n in constant and n.op != "get_attr"
                and any(u not in constant for u in n.users)]
    if not frontier:
        return 0
    interpreter = fx.Interpreter(gm, garbage_collect_values=False)
    with torch.no_grad():
        interpreter.run(*example_inputs)
    folded = 0
    for index, node in enumerate(frontier):
        value = interpreter.env.get(node)
        if not isinstance(value, torch.Tensor):
            continue
        name = f"_folded_constant_{index}"
        gm.register_buffer(name, value.detach().clone())
        with gm.graph.inserting_before(node):
            replacement = gm.graph.get_attr(name)
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        folded += 1
    # what computed them is dead now, in-place fills of constant tensors included
    for node in reversed(list(gm.graph.nodes)):
        if node in constant and not node.users:
            gm.graph.erase_node(node)
    gm.recompile()
    return folded


def canonicalize(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """In-place ops made functional where safe, generic convolutions named, then input-independent
    tensors folded (in place).
    The result must compute exactly what the graph computed before; anything else is a bug."""
    with torch.no_grad():
        before = gm(*example_inputs)
    if functionalize_in_place(gm) + specialize_convolutions(gm) + fold_constants(gm, example_inputs):
        with torch.no_grad():
            after = gm(*example_inputs)
        after_leaves, before_leaves = tensor_leaves(after), tensor_leaves(before)
        same = len(after_leaves) == len(before_leaves) and all(
            torch.equal(a, b) for a, b in zip(after_leaves, before_leaves))
        if not same:
            raise RuntimeError("the canonical form of the exported graph computes something else")
    return gm
