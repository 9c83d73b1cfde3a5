"""The teacher's blocks, read from the module hierarchy capture records on every node.

torch.fx and torch.export record, per node, the stack of modules whose forward called it
(`nn_module_stack`: path -> class); rewrites pass it on to what they build. A node's block is the
outermost module on that stack that is an element of a sequence of modules (its parent is an
nn.Sequential, or holds it in a list, so the parent's forward is not on the stack), and that is
neither a container (nn.Sequential or a subclass) nor one of torch.nn's own layers: a ResNet
BasicBlock (`layer1.0`), an inverted residual (`features.2`), a Swin block (`features.1.0`), a ViT
encoder layer (`encoder.layers.encoder_layer_0`). The squeeze-and-excitation inside an MBConv
belongs to the MBConv; the stem conv of a ResNet, called by the model itself, belongs to no block;
a module the model calls directly is a block only when no module inside it is one (ViT's encoder
holds its layers).
"""

from __future__ import annotations

import inspect

from torch import fx, nn

from fxrewrite.rewrite.driver import MODULE_STACK

_TORCH_LAYERS = "torch.nn.modules."


def _class_name(kind: object) -> str:
    if isinstance(kind, str):
        return kind
    return f"{getattr(kind, '__module__', '')}.{getattr(kind, '__qualname__', '')}"


def _is_container(kind: object) -> bool:
    # a class recorded as a string (a loaded .pt2) is never imported: that could run code from the file
    if inspect.isclass(kind):
        return issubclass(kind, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
    return _class_name(kind).startswith(_TORCH_LAYERS + "container.")


def teacher_block(node: fx.Node) -> str | None:
    """The path of the teacher block `node` belongs to (module docstring), or None."""
    stack = node.meta.get(MODULE_STACK)
    if not stack:
        return None
    modules = {path: kind for path, kind in stack.values() if path}  # torch.export lists the model itself as ''
    blocks = [path for path, kind in modules.items()  # outermost first
              if not path.startswith("_") and not (_is_container(kind) or _class_name(kind).startswith(_TORCH_LAYERS))
              and (path.rpartition(".")[0] not in modules or _is_container(modules[path.rpartition(".")[0]]))]
    # a module the model calls directly (ViT's encoder) is a block only when none inside it is one
    inner = [path for path in blocks if "." in path]
    return (inner or blocks or [None])[0]
