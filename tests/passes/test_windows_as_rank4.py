import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import captured, run_pass

PASS = "windows-as-rank4"


class Windows(nn.Module):
    """Swin's window partition (a linear layer between, with bias) and reverse, of w x w windows."""

    def __init__(self, window: int):
        super().__init__()
        self.window, self.fc = window, nn.Linear(6, 6)

    def forward(self, x):
        batch, height, width, channels = x.shape
        w = self.window
        windows = x.view(batch, height // w, w, width // w, w, channels).permute(0, 1, 3, 2, 4, 5)
        windows = self.fc(windows.reshape(-1, w * w, channels))
        back = windows.view(batch, height // w, width // w, w, w, channels).permute(0, 1, 3, 2, 4, 5)
        return back.reshape(batch, height, width, channels)


def ranks(gm) -> list[int]:
    return [len(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")]


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("window, shape", [(7, (2, 14, 21, 6)), (3, (1, 9, 3, 6)), (1, (1, 5, 4, 6))])
def test_window_partition_and_reverse_in_rank_4(form, window, shape):
    torch.manual_seed(window)
    teacher = Windows(window).eval()
    x = torch.randn(*shape)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 2 and max(ranks(gm)) == 4
    with torch.no_grad():
        assert torch.equal(gm(x), teacher(x))  # only data moves


class OtherSwap(Windows):
    def forward(self, x):
        b, h, w_, c = x.shape
        return x.view(b, h // 2, 2, w_ // 2, 2, c).permute(0, 3, 1, 2, 4, 5).reshape(b, -1, c)


def test_another_permutation_is_declined():
    x = torch.randn(1, 4, 4, 6)
    gm, rewrites = run_pass(PASS, captured(OtherSwap(2).eval(), x, "aten"), x)
    assert rewrites == 0


def test_the_u55_runs_windows_after_lowering():
    teacher = Windows(3).eval()
    x = torch.randn(1, 9, 6, 6)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == ()
    assert result.report.max_relative_error <= 1e-6
