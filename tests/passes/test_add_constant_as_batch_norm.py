import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class PositionAdd(nn.Module):
    """Tokens plus a learned position table (ViT's, BERT's), added as a module attribute, through
    torch.add with alpha, or looked up from an embedding at fixed positions."""

    def __init__(self, form: str, length: int = 7, dim: int = 5):
        super().__init__()
        self.form = form
        self.position = nn.Parameter(torch.randn(1, length, dim))
        self.table = nn.Embedding(length + 3, dim)
        self.register_buffer("positions", torch.arange(length).flip(0)[None])

    def forward(self, x):
        if self.form == "functional":
            return torch.add(x, self.position, alpha=-0.5)
        if self.form == "lookup":
            return self.table(self.positions) + x
        return x + self.position


@pytest.mark.parametrize("form", [*FORMS, "lookup"])
def test_a_table_added_to_tokens_becomes_a_batch_norm_shift_between_reshapes(form):
    torch.manual_seed(0)
    model = PositionAdd(form).eval()
    x = torch.randn(3, 7, 5)
    gm, rewrites = run_pass("add-constant-as-batch-norm", captured(model, x, "aten" if form == "aten" else "module"), x)
    assert rewrites == 1 and kinds(gm)["batch_norm"] == 1 and kinds(gm)["reshape"] == 2 and "add" not in kinds(gm)
    assert_same(gm, model, x)
    assert_same(gm, model, torch.randn(5, 7, 5))  # the batch stays free


class ChannelOffset(nn.Module):
    """A per-channel offset on a map, on the left of the add, scaled by alpha."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.randn(1, 4, 1, 1))

    def forward(self, x):
        return torch.add(self.offset, torch.relu(x), alpha=1.5)


@pytest.mark.parametrize("form", FORMS)
def test_a_per_channel_offset_on_a_map_is_one_batch_norm_over_its_channels(form):
    torch.manual_seed(0)
    model = ChannelOffset().eval()
    x = torch.randn(2, 4, 9, 11)
    gm, rewrites = run_pass("add-constant-as-batch-norm", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm) == {"relu": 1, "batch_norm": 1}
    norm = next(m for m in gm.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(norm.weight, torch.full((4,), 1.5))
    assert_same(gm, model, x)


class TwoInputs(nn.Module):
    def forward(self, x):
        return x + torch.relu(x)


def test_an_add_of_two_computed_tensors_is_left_alone():
    x = torch.randn(2, 7, 5)
    gm, rewrites = run_pass("add-constant-as-batch-norm", captured(TwoInputs(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["add"] == 1


def test_position_embeddings_lower_onto_archnet_transformer_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(PositionAdd("lookup"), nn.Linear(5, 3)).eval()
    x = torch.randn(1, 7, 5)
    lowered = lower(captured(model, x, "module"), (x,), target="archnet-transformer")
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    assert lowered.report.rewrites["add-constant-as-batch-norm"] == 1
