"""Capture: frontends, the fallback, shape metadata, and the error when both frontends fail."""

from __future__ import annotations

import pytest
import torch

from fxrewrite.frontend import capture
from fxrewrite.errors import CaptureError

import zoo


def test_symbolic_capture_keeps_module_calls_and_records_shapes():
    x = torch.randn(1, 3, 16, 16)
    gm = capture(zoo.TinyCNN().eval(), (x,))
    assert gm.meta["fxrewrite_frontend"] == "symbolic"
    assert any(n.op == "call_module" for n in gm.graph.nodes)
    for node in gm.graph.nodes:
        if node.op != "output":
            assert "tensor_meta" in node.meta, node.name
    conv = next(n for n in gm.graph.nodes if n.target == "features.4")
    assert tuple(conv.meta["tensor_meta"].shape) == (1, 16, 8, 8)
    assert conv.meta["tensor_meta"].dtype == torch.float32


def test_auto_falls_back_to_export_when_tracing_fails():
    x = torch.randn(1, 3, 8, 8)
    module = zoo.ShapeBranch().eval()
    gm = capture(module, (x,))
    assert gm.meta["fxrewrite_frontend"] == "export"
    torch.testing.assert_close(gm(x), module(x))
    with pytest.raises(CaptureError, match="symbolic tracing failed"):
        capture(module, (x,), "symbolic")


def test_export_frontend_on_request():
    x = torch.randn(1, 3, 16, 16)
    gm = capture(zoo.TinyCNN().eval(), (x,), "export")
    assert gm.meta["fxrewrite_frontend"] == "export"
    assert all(n.op != "call_module" or n.target == "_guards_fn" for n in gm.graph.nodes)


def test_both_frontends_failing_names_the_line_and_the_remedies():
    with pytest.raises(CaptureError) as error:
        capture(zoo.ValueBranch().eval(), (torch.randn(1, 3),))
    message = str(error.value)
    assert "cannot capture ValueBranch" in message
    assert "symbolic tracing failed at zoo.py" in message and "`if x.sum() > 0:`" in message
    assert "torch.export failed" in message
    for remedy in ("concrete_args", "torch.fx.wrap", "leaf module", "--frontend export"):
        assert remedy in message
    assert "\n" not in message


def test_unknown_frontend():
    with pytest.raises(CaptureError, match="unknown frontend 'jit'"):
        capture(zoo.TinyCNN(), (torch.randn(1, 3, 8, 8),), "jit")
