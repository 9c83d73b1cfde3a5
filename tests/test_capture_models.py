"""Real third-party models capture, and the captured graph computes what eager does."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fxrewrite.frontend import capture
from fxrewrite.ir import UNKNOWN, op_view

#: the 16 models of ../shared/zoo_report.py
TORCHVISION = ["resnet18", "resnet50", "convnext_tiny", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "vit_b_16", "swin_t", "regnet_y_400mf", "densenet121", "shufflenet_v2_x1_0", "squeezenet1_1",
               "mnasnet0_5", "googlenet", "efficientnet_v2_s", "maxvit_t"]
#: symbolic tracing leaves their torch.fx.wrap'ed functions opaque, so `auto` takes torch.export's graph
SEEN_THROUGH_EXPORT = {"swin_t"}


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["auto", "export"])
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_capture_exactly_with_every_op_known(name, frontend):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, 224, 224)
    gm = capture(model, (x,), frontend)
    expected = "export" if frontend == "export" or name in SEEN_THROUGH_EXPORT else "symbolic"
    assert gm.meta["fxrewrite_frontend"] == expected
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))
    unknown = [op_view(n).attrs["target"] for n in gm.graph.nodes if op_view(n).kind == UNKNOWN]
    assert unknown == []


def _transformers_cases():
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTModel(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8))
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64))
    convnext = transformers.ConvNextModel(transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    return {
        "vit": (vit, torch.randn(1, 3, 32, 32)),
        "bert": (bert, torch.randint(0, 100, (1, 16))),
        "convnext": (convnext, torch.randn(1, 3, 32, 32)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit", "bert", "convnext"])
def test_transformers_models_capture_through_the_export_fallback(name):
    torch.manual_seed(0)
    model, x = _transformers_cases()[name]
    model.eval()
    gm = capture(model, (x,))
    assert gm.meta["fxrewrite_frontend"] == "export", "symbolic tracing is expected to fail on transformers models"
    with torch.no_grad():
        torch.testing.assert_close(gm(x).last_hidden_state, model(x).last_hidden_state)
