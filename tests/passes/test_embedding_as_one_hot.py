import pytest
import torch
from torch import nn

from pass_helpers import captured, kinds, run_pass


@pytest.mark.parametrize("form", ["module", "aten"])
def test_embedding_as_one_hot_times_table(form):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 5)).eval()
    ids = torch.randint(0, 11, (3, 7))
    gm, rewrites = run_pass("embedding-as-one-hot", captured(model, ids, form), ids)
    assert rewrites == 1
    assert kinds(gm) == {"one_hot": 1, "cast": 1, "linear": 1}
    assert torch.equal(gm(ids), model(ids))


def test_max_norm_is_declined():
    model = nn.Sequential(nn.Embedding(11, 5, max_norm=1.0)).eval()
    ids = torch.randint(0, 11, (2, 3))
    gm, rewrites = run_pass("embedding-as-one-hot", captured(model, ids, "module"), ids)
    assert rewrites == 0
