"""Getting a model in: MODEL specs and .pt2 files to modules with example inputs, and capture to a
GraphModule with shape metadata (symbolic tracing or torch.export)."""

from fxrewrite.frontend.capture import FRONTENDS, Frontend, capture
from fxrewrite.frontend.inputs import DEFAULT_INPUT_SHAPE
from fxrewrite.frontend.load import LoadedModel, load_model

__all__ = ["DEFAULT_INPUT_SHAPE", "FRONTENDS", "Frontend", "LoadedModel", "capture", "load_model"]
