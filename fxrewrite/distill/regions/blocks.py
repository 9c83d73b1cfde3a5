"""The teacher's blocks, read from the module hierarchy capture records on every node.

torch.fx and torch.export record, per node, the stack of modules whose forward called it
(`nn_module_stack`: path -> class); rewrites pass it on to what they build. A node's block is the
outermost module on that stack whose class the model uses more than once (a block is what a
network repeats) and that is neither a container (nn.Sequential or a subclass) nor one of torch.nn's
own layers: a ResNet BasicBlock (`layer1.0`), an inverted residual (`features.2`), a Swin block
(`features.1.0`), a ViT encoder layer (`encoder.layers.encoder_layer_0`; the encoder holding them
is used once), an Inception block (`inception3a`, not the conv-BN-ReLU units of its branches). The
squeeze-and-excitation inside an MBConv belongs to the MBConv; the stem conv of a ResNet, called by
the model itself, belongs to no block.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import fx, nn

from fxrewrite.rewrite.driver import MODULE_STACK

_TORCH_LAYERS = "torch.nn.modules."
#: each node's teacher block (its module path), or None
Blocks = Mapping[fx.Node, "str | None"]


def _class_name(kind: object) -> str:
    if isinstance(kind, str):
        return kind
    return f"{getattr(kind, '__module__', '')}.{getattr(kind, '__qualname__', '')}"


def _is_container(kind: object) -> bool:
    # a class recorded as a string (a loaded .pt2) is never imported: that could run code from the file
    if inspect.isclass(kind):
        return issubclass(kind, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
    return _class_name(kind).startswith(_TORCH_LAYERS + "container.")


def _stack(node: fx.Node) -> dict[str, object]:
    # torch.export lists the model itself as ''; entries starting with _ are no module paths
    return {path: kind for path, kind in (node.meta.get(MODULE_STACK) or {}).values()
            if path and not path.startswith("_")}


def teacher_blocks(graph: fx.Graph) -> Blocks:
    """Each node's teacher block (module docstring), or None."""
    paths: dict[str, set[str]] = {}
    for node in graph.nodes:
        for path, kind in _stack(node).items():
            paths.setdefault(_class_name(kind), set()).add(path)
    repeated = {name for name, where in paths.items() if len(where) > 1}
    found = {}
    for node in graph.nodes:
        found[node] = next((path for path, kind in _stack(node).items()  # outermost first
                            if _class_name(kind) in repeated and not _is_container(kind)
                            and not _class_name(kind).startswith(_TORCH_LAYERS)), None)
    return found
