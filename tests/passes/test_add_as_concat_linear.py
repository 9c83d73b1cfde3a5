import pytest
import torch
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass
from fxrewrite import lower


class TokenResidual(nn.Module):
    """x + alpha * f(x) on tokens; `activated` puts a ReLU after the FC layer, so the add cannot fold."""

    def __init__(self, alpha=1.0, fc_left=False, activated=False, vectors=False):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.alpha, self.fc_left, self.activated, self.vectors = alpha, fc_left, activated, vectors

    def forward(self, x):
        x = x.flatten(1)[:, :6] if self.vectors else x
        y = self.fc(x)
        y = torch.relu(y) if self.activated else y
        return torch.add(y, x, alpha=self.alpha) if self.fc_left else torch.add(x, y, alpha=self.alpha)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("vectors", [False, True])
def test_add_after_activation_becomes_feature_concat_and_identity_fc(form, vectors):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 6)
    model = TokenResidual(alpha=0.5, activated=True, vectors=vectors).eval()
    gm, rewrites = run_pass("add-as-concat-linear", captured(model, x, form), x)
    assert rewrites == 1
    found = kinds(gm)
    assert found["linear"] == 2 and found["cat"] == 1 and "add" not in found
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("alpha, fc_left", [(1.0, False), (-2.0, True), (0.25, True), (3.0, False)])
def test_add_folds_into_the_fc_layer_it_adds_to(form, alpha, fc_left):
    torch.manual_seed(1)
    x = torch.randn(2, 7, 6)
    model = TokenResidual(alpha, fc_left).eval()
    gm, rewrites = run_pass("add-as-concat-linear", captured(model, x, form), x)
    assert rewrites == 1
    assert kinds(gm) == {"linear": 1, "cat": 1}
    assert_same(gm, model, x)


def test_maps_are_left_to_add_as_concat_conv():
    x = torch.randn(1, 4, 5, 5)

    class MapResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + torch.relu(self.conv(x))

    gm, rewrites = run_pass("add-as-concat-linear", captured(MapResidual().eval(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["add"] == 1


def test_a_token_residual_lowers_onto_archnet_transformer_exactly():
    torch.manual_seed(2)
    x = torch.randn(1, 9, 6)
    model = TokenResidual(activated=True).eval()
    lowered = lower(captured(model, x, "module"), (x,), target="archnet-transformer")
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    assert lowered.report.rewrites["add-as-concat-linear"] == 1
