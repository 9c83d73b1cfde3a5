import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class ChannelsLastMlp(nn.Module):
    """ConvNeXt's MLP: permute to channels-last, scale, linear, GELU, linear (biases), offset, permute back."""

    def __init__(self, form: str, channels: int = 6, activation=nn.functional.gelu):
        super().__init__()
        self.form, self.activation = form, activation
        self.up, self.down = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.scale, self.offset = nn.Parameter(torch.randn(channels)), nn.Parameter(torch.randn(channels))

    def forward(self, x):
        if self.form == "functional":
            y = torch.permute(x, (0, 2, 3, 1)) * self.scale
            y = nn.functional.linear(self.activation(nn.functional.linear(y, self.up.weight, self.up.bias)),
                                     self.down.weight, self.down.bias)
            return torch.add(y, self.offset, alpha=0.5).permute(0, 3, 1, 2)
        y = self.down(self.activation(self.up(x.permute(0, 2, 3, 1) * self.scale)))
        return (y + 0.5 * self.offset).permute(0, 3, 1, 2)


@pytest.mark.parametrize("form", FORMS)
def test_a_channels_last_mlp_runs_on_the_channels_first_map_as_1x1_convs(form):
    torch.manual_seed(0)
    model = ChannelsLastMlp("functional" if form == "functional" else "module").eval()
    x = torch.randn(2, 6, 9, 11)
    gm, rewrites = run_pass("channels-last-as-channels-first", captured(model, x, form), x)
    assert rewrites == 1 and "permute" not in kinds(gm) and "linear" not in kinds(gm)
    assert kinds(gm)["conv2d"] == 2 and kinds(gm)["gelu"] == 1
    assert_same(gm, model, x)
    assert_same(gm, model, 10 * torch.randn(2, 6, 9, 11))


class ReadHalfway(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2), y.sum()


class NormBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("model", [ReadHalfway(), NormBetween()])
def test_a_chain_read_halfway_or_holding_a_norm_over_channels_is_left_alone(model):
    x = torch.randn(1, 4, 3, 5)
    gm, rewrites = run_pass("channels-last-as-channels-first", captured(model.eval(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["permute"] == 2


def test_a_convnext_mlp_with_relu_lowers_onto_archnet_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ChannelsLastMlp("module", 8, torch.relu)).eval()
    x = torch.randn(1, 3, 7, 9)
    lowered = lower(captured(model, x, "module"), (x,), target="archnet", max_growth=100)
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    assert lowered.report.rewrites["channels-last-as-channels-first"] == 1
    assert lowered.report.rewrites["mul-constant-as-batch-norm"] == 1  # the scale, now per channel
