import torch
from torch import nn

from pass_helpers import assert_same, captured, kinds, run_pass


def test_dropout_and_identity_disappear():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Dropout(0.3), nn.Identity(), nn.ReLU(), nn.Dropout2d(0.1)).eval()
    x = torch.randn(1, 3, 9, 9)
    for form in ("module", "aten"):
        gm, rewrites = run_pass("remove-noops", captured(model, x, form), x)
        assert rewrites == {"module": 3, "aten": 2}[form]
        assert kinds(gm) == {"conv2d": 1, "relu": 1}
        assert_same(gm, model, x)
