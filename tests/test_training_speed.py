"""The training loop's speed measures change how a step runs, never what it computes: the fused Adam
takes the per-tensor loop's steps, and a model trained in the channels-last layout reaches the loss and
weights the contiguous one does, within float32 tolerance (fxrewrite.distill.training.loop)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.distill.training import loop
from fxrewrite.distill.training.checkpoints import Checkpoints
from fxrewrite.distill.training.loop import adam, train_phase, training_layout


class DepthwiseBlock(nn.Module):
    """An inverted residual's core with a bias, odd sizes and a stride: 1x1 expand, 3x3 depthwise, 1x1 project."""

    def __init__(self, flatten: str = "reshape"):
        super().__init__()
        # no bias before the norm: its gradient is rounding noise, which Adam would scale up to full steps
        self.expand, self.norm = nn.Conv2d(3, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.depthwise = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12)
        self.project, self.flatten = nn.Conv2d(12, 5, 1), flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(F.relu(self.depthwise(F.relu(self.norm(self.expand(x))))))
        # a view that merges channels with rows holds only for the contiguous layout
        return y.view(len(y), -1) if self.flatten == "view" else y.reshape(len(y), -1)


def _trained(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], epochs: int = 3) -> list[float]:
    losses: list[float] = []
    # plain SGD: Adam scales a gradient's rounding noise up to a full step where the gradient is near zero
    optimizer = torch.optim.SGD(model.parameters(), 0.05)

    def loss(_: int, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        value = F.mse_loss(model(batch[0]), batch[1])
        if torch.is_grad_enabled():  # not the layout probe
            losses.append(value.item())
        return value

    train_phase("phase", epochs, model, optimizer, batches, loss, Checkpoints(None, "", False), None)
    return losses


@pytest.fixture()
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return [(torch.randn(8, 3, 11, 13), torch.randn(8, 5 * 6 * 7)) for _ in range(3)] + \
        [(torch.randn(3, 3, 11, 13), torch.randn(3, 5 * 6 * 7))]  # a smaller last batch


def test_the_fused_adam_takes_the_per_tensor_loops_steps():
    torch.manual_seed(0)
    fused, looped = DepthwiseBlock(), DepthwiseBlock()
    looped.load_state_dict(fused.state_dict())
    optimizers = [adam(fused.parameters(), 1e-2), torch.optim.Adam(looped.parameters(), 1e-2, foreach=False)]
    x = torch.randn(4, 3, 11, 13)
    for _ in range(5):
        for model, optimizer in zip((fused, looped), optimizers):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for want, got in zip(looped.parameters(), fused.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_depthwise_model_trains_channels_last_to_the_contiguous_loss_and_weights(batches, monkeypatch):
    torch.manual_seed(1)
    model, reference = DepthwiseBlock(), DepthwiseBlock()
    reference.load_state_dict(model.state_dict())
    layouts = []
    monkeypatch.setattr(loop, "training_layout", lambda *a: layouts.append(training_layout(*a)) or layouts[-1])
    losses = _trained(model, batches)
    monkeypatch.setattr(loop, "training_layout", lambda *a: torch.contiguous_format)
    want = _trained(reference, batches)
    assert layouts == [torch.channels_last]
    torch.testing.assert_close(losses, want, rtol=1e-4, atol=1e-6)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())  # the phase hands back a contiguous model


def test_a_graph_that_only_views_a_contiguous_conv_output_trains_contiguous(batches):
    model = DepthwiseBlock(flatten="view")
    assert training_layout(model, lambda: model(batches[0][0])) == torch.contiguous_format
    assert len(_trained(model, batches, epochs=1)) == len(batches)


def test_the_layout_probe_leaves_the_model_as_it_was(batches):
    model = DepthwiseBlock().train()
    model.norm.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert training_layout(model, lambda: model(batches[0][0])) == torch.channels_last
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_dense_model_stays_contiguous():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    assert training_layout(model, lambda: pytest.fail("no probe for a model without depthwise convs")) \
        == torch.contiguous_format
