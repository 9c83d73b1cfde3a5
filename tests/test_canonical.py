"""The canonical form of exported graphs: in-place ops made functional where that is safe, tensors
that do not depend on the input folded into buffers, and the same results as before."""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite.ir import UNKNOWN, op_view

from conftest import exported


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.2, inplace=True)

    def forward(self, x):
        y = self.conv(x)
        z = torch.relu_(y)
        z += 1.0
        return self.drop(z) * y  # reads y after it was mutated: it must read the mutated value


class ViewMutated(nn.Module):
    def forward(self, x):
        y = x * 2
        y[:, :1].relu_()  # mutates y through a view, then y is read: cannot be made functional
        return y + 1


class Masked(nn.Module):
    """A mask built from shapes alone, as Swin builds its shifted-window mask."""

    def forward(self, x):
        mask = x.new_zeros(x.shape[-2:])
        mask[:2, :] = 1.0
        mask[:, -1:] = 2.0
        return x.masked_fill(mask == 1.0, 0.0) + mask


def targets(gm) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def test_in_place_ops_become_functional_and_compute_the_same():
    x = torch.randn(1, 3, 6, 7)
    model = InPlace().eval()
    gm = exported(model, x)
    assert not [t for t in targets(gm) if t.split(".")[-2].endswith("_") and not t.startswith("aten._")]
    assert [op_view(n).kind for n in gm.graph.nodes if op_view(n).kind == UNKNOWN] == []
    torch.testing.assert_close(gm(x), model(x))


def test_an_in_place_op_through_a_view_stays_with_its_reason():
    x = torch.randn(2, 3)
    gm = exported(ViewMutated(), x)
    unknown = [op_view(n) for n in gm.graph.nodes if op_view(n).kind == UNKNOWN]
    assert [v.attrs["target"] for v in unknown] == ["aten.relu_.default"]
    assert "read again under another name" in unknown[0].attrs["why"]
    torch.testing.assert_close(gm(x), ViewMutated()(x))


def test_tensors_that_do_not_depend_on_the_input_are_folded():
    x = torch.randn(1, 2, 5, 6)
    gm = exported(Masked(), x)
    assert not any(t in targets(gm) for t in ("aten.fill_.Scalar", "aten.new_zeros.default", "aten.copy_.default"))
    assert any(name.startswith("_folded_constant") for name, _ in gm.named_buffers())
    torch.testing.assert_close(gm(x), Masked()(x))
