"""The low-rank split of ResNet basic blocks (lowering/candidates/approx_basic_block_as_low_rank_convs.py):
identity-skip blocks found in module and ATen captures, the split exact where the teacher's convs have
rank at most C/2 (biases, odd sizes, borders), legal on the Ethos-U targets, distilled better than
its start."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from conftest import held_out_errors
from fxrewrite import api
from fxrewrite.frontend.capture import capture
from fxrewrite.legality import check
from fxrewrite.lowering.candidates.approx_basic_block_as_low_rank_convs import (CANDIDATE, LowRankBasicBlock,
                                                                               find_basic_blocks)
from fxrewrite.target import Target

ETHOS = Target.load("ethos-u55-128")


def _teacher(channels: int = 16, rank: int | None = None) -> BasicBlock:
    """A basic block with batch-norm statistics that are not the identity; its convs of rank at most
    `rank` where it is given."""
    torch.manual_seed(0)
    block = BasicBlock(channels, channels).eval()
    for norm in (block.bn1, block.bn2):
        norm.running_mean.uniform_(-0.5, 0.5), norm.running_var.uniform_(0.5, 2), norm.bias.data.uniform_(-0.5, 0.5)
    if rank is not None:
        for conv in (block.conv1, block.conv2):
            low = torch.randn(channels, rank) @ torch.randn(rank, channels * 9) / 10
            conv.weight.data.copy_(low.reshape(conv.weight.shape))
    return block


def _block(teacher: nn.Module, x: torch.Tensor, frontend: str = "export"):
    [block] = find_basic_blocks(api.lower(teacher, (x[:1],), target=ETHOS, frontend=frontend).gm)
    return block


@pytest.mark.parametrize("frontend", ["symbolic", "export"])
def test_the_identity_skip_blocks_of_resnet18_are_found(frontend):
    model = torchvision.models.resnet18(num_classes=10).eval()
    gm = api.lower(model, (torch.randn(1, 3, 32, 32),), target=ETHOS, frontend=frontend).gm
    blocks = find_basic_blocks(gm)
    # the first block of layers 2-4 has a strided, projected skip: not an identity
    assert [(b.in_ch, b.out_ch, b.kernel, b.residual) for b in blocks] == [
        (64, 64, 3, True), (64, 64, 3, True), (128, 128, 3, True), (256, 256, 3, True), (512, 512, 3, True)]
    assert all(CANDIDATE.refusal(b) == "" for b in blocks)


@pytest.mark.parametrize("frontend", ["symbolic", "export"])
def test_the_split_is_exact_where_the_convs_have_half_rank(frontend):
    teacher = _teacher(rank=8)  # 16 channels: the split keeps rank 8
    x = torch.randn(3, 16, 9, 11)  # odd sizes: the k x k conv's border
    low_rank = LowRankBasicBlock(_block(teacher, x, frontend))
    with torch.no_grad():
        want = teacher.bn2(teacher.conv2(teacher.relu(teacher.bn1(teacher.conv1(x))))) + x  # before the last ReLU
        assert torch.allclose(low_rank(x), want, atol=1e-5 * want.abs().max().item())
    for target in ("ethos-u55-128", "ethos-u65-256"):
        assert check(capture(low_rank, (x[:1],), "symbolic"), Target.load(target)).all_legal, target


def test_too_few_channels_are_not_split():
    block = _block(_teacher(channels=2), torch.randn(1, 2, 9, 9))
    assert CANDIDATE.refusal(block) == "2 channels are too few to split"


def test_the_distilled_split_beats_its_initialisation_on_held_out_inputs():
    teacher = _teacher()  # full rank: the truncation loses half the spectrum
    x = torch.relu(torch.randn(192, 16, 9, 9))  # a ReLU's output, as the block reads in a ResNet
    with torch.no_grad():
        y = teacher.bn2(teacher.conv2(teacher.relu(teacher.bn1(teacher.conv1(x))))) + x
    low_rank = LowRankBasicBlock(_block(teacher, x))
    initial, distilled = held_out_errors(low_rank, x, y)
    # measured 0.405-0.409 of the initial error over input seeds and 1 or 2 threads
    assert 0 < distilled < 0.7 * initial
