import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import assert_same, captured, kinds, run_pass


def test_dropout_and_identity_disappear():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Dropout(0.3), nn.Identity(), nn.ReLU(), nn.Dropout2d(0.1)).eval()
    x = torch.randn(1, 3, 9, 9)
    for form in ("module", "aten"):
        gm, rewrites = run_pass("remove-noops", captured(model, x, form), x)
        assert rewrites == {"module": 3, "aten": 2}[form]
        assert kinds(gm) == {"conv2d": 1, "relu": 1}
        assert_same(gm, model, x)


class ChannelShuffle(nn.Module):
    """shufflenet_v2's channel shuffle: the copy before the second view is what makes it legal."""

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def test_a_copy_that_a_view_reads_goes_and_the_view_becomes_a_reshape():
    """Regression: removing .contiguous() alone made the next .view() fail in ShapeProp (exit 3 on shufflenet)."""
    x = torch.randn(1, 4, 3, 5)
    for form in ("module", "aten"):
        gm, rewrites = run_pass("remove-noops", captured(ChannelShuffle().eval(), x, form), x)
        assert rewrites == 1 and "identity" not in kinds(gm)
        assert_same(gm, ChannelShuffle(), x)
        gm.recompile()
        assert_same(gm, ChannelShuffle(), x)


def test_the_lowering_of_a_channel_shuffle_runs():
    x = torch.randn(1, 4, 3, 5)
    lowered = lower(captured(ChannelShuffle().eval(), x, "module"), (x,), target="npu-generic")
    assert lowered.report.max_relative_error < 1e-5


class HeadsSplit(nn.Module):
    """nn.MultiheadAttention's packed projection: the copy is read by selects, whose results are viewed."""

    def forward(self, x):
        n, length, width = x.shape
        packed = x.unflatten(-1, (3, width // 3)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
        q, k = packed[0], packed[1]
        return q.view(n * length, -1) + k.view(n * length, -1)


def test_a_copy_read_by_a_view_through_selects_goes_and_the_views_become_reshapes():
    """Regression: torchvision's VisionTransformer exported with a dynamic batch ended in exit 3 when
    the copy before nn.MultiheadAttention's selects and views was dropped and the views kept."""
    x = torch.randn(2, 5, 12)
    for form in ("module", "aten"):
        module = HeadsSplit().eval()
        gm, rewrites = run_pass("remove-noops", captured(module, x, form), x)
        assert rewrites == 1 and "identity" not in kinds(gm)
        assert_same(gm, module, x)


class Padded(nn.Module):
    """Swin's pad to a multiple of the window: by nothing where the map already is one."""

    def __init__(self, amount: int):
        super().__init__()
        self.amount = amount

    def forward(self, x):
        return torch.nn.functional.pad(x, (0, 0, 0, self.amount, 0, self.amount))


def test_a_pad_of_nothing_disappears_and_a_real_pad_stays():
    x = torch.randn(1, 4, 4, 3)
    for form in ("module", "aten"):
        gm, rewrites = run_pass("remove-noops", captured(Padded(0).eval(), x, form), x)
        assert rewrites == 1 and "pad" not in kinds(gm)
        assert_same(gm, Padded(0), x, rtol=0.0)
        gm, rewrites = run_pass("remove-noops", captured(Padded(1).eval(), x, form), x)
        assert rewrites == 0 and kinds(gm)["pad"] == 1
