"""Greedy decoding (fxrewrite.generate) with a tiny nn.Transformer trained here on a toy translation:
the teacher's modules, their exported graphs and the exactly lowered graphs translate alike, and
every mismatch of graphs, lengths or vocabulary is one clear error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite import lower
from fxrewrite.errors import UsageError
from fxrewrite.generate import translator

PAD, START, END, VOCABULARY = 0, 1, 2, 14
SOURCE, TARGET = 7, 8  # fixed lengths: at most 6 source words, the start token and 6 words + end


def _pairs(count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Sentences of 2-6 words (ids 3..13) and their translations: reversed, each word w -> 3 + (w + 1) % 11."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(count):
        length = int(torch.randint(2, SOURCE, (), generator=generator))
        source = (3 + torch.randint(0, 11, (length,), generator=generator)).tolist()
        pairs.append((source, [3 + (w + 1) % 11 for w in reversed(source)]))
    return pairs


class TinyTranslator(nn.Module):
    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, dim)
        self.position = nn.Parameter(0.1 * torch.randn(TARGET, dim))
        self.transformer = nn.Transformer(dim, 2, 1, 1, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, VOCABULARY)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        return self.transformer.encoder(self.embed(source) + self.position[:source.shape[1]])

    def decode(self, target: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(target.shape[1])
        return self.head(self.transformer.decoder(self.embed(target) + self.position[:target.shape[1]], memory,
                                                  tgt_mask=causal, tgt_is_causal=True))


class Encoder(nn.Module):
    def __init__(self, model: TinyTranslator):
        super().__init__()
        self.model = model

    def forward(self, source):
        return self.model.encode(source)


class Decoder(Encoder):
    def forward(self, target, memory):
        return self.model.decode(target, memory)


def _batch(pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    sources = torch.full((len(pairs), SOURCE), PAD)
    targets = torch.full((len(pairs), TARGET + 1), PAD)
    for row, (source, translation) in enumerate(pairs):
        sources[row, :len(source)] = torch.tensor(source)
        targets[row, :len(translation) + 2] = torch.tensor([START, *translation, END])
    return sources, targets


@pytest.fixture(scope="module")
def trained() -> TinyTranslator:
    torch.manual_seed(0)
    model = TinyTranslator()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    sources, targets = _batch(_pairs(2000, seed=0))
    for step in range(600):
        rows = torch.randint(0, len(sources), (64,))
        scores = model.decode(targets[rows, :-1], model.encode(sources[rows]))
        loss = F.cross_entropy(scores.reshape(-1, VOCABULARY), targets[rows, 1:].reshape(-1), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def graphs(trained):
    source, target = torch.zeros(1, SOURCE, dtype=torch.long), torch.zeros(1, TARGET, dtype=torch.long)
    with torch.no_grad():
        memory = trained.encode(source)
    return (torch.export.export(Encoder(trained), (source,)),
            torch.export.export(Decoder(trained), (target, memory)), source, target, memory)


TEST = _pairs(60, seed=1)


def _translations(translate) -> list[list[int]]:
    return [translate(source, START, END) for source, _ in TEST]


def test_the_teacher_translates_and_its_exported_graphs_translate_alike(trained, graphs):
    eager = translator(Encoder(trained), Decoder(trained), source_length=SOURCE, target_length=TARGET)
    exported = translator(graphs[0], graphs[1])
    assert (exported.source_length, exported.target_length, exported.vocabulary) == (SOURCE, TARGET, VOCABULARY)
    teacher = _translations(eager)
    correct = sum(got == want for got, (_, want) in zip(teacher, TEST)) / len(TEST)
    assert correct >= 0.5  # a learned translation: chance is 11^-4 for four words
    assert _translations(exported) == teacher


def test_lowered_graphs_translate_as_the_teacher_does(trained, graphs):
    encoder, decoder, source, target, memory = graphs
    chip = "archnet-transformer"
    lowered = [lower(encoder.module(), (source,), target=chip), lower(decoder.module(), (target, memory), target=chip)]
    assert all(result.report.max_relative_error <= 1e-4 for result in lowered)
    # the decoder's causal self-attention and its cross-attention lowered to products and a softmax
    assert lowered[1].report.rewrites["sdpa-as-matmul-softmax"] == 2
    teacher = _translations(translator(encoder, decoder))
    student = _translations(translator(lowered[0].gm, lowered[1].gm))
    assert sum(a == b for a, b in zip(student, teacher)) >= 0.95 * len(TEST)


def test_bad_inputs_and_mismatched_graphs_are_one_clear_error(trained, graphs):
    encoder, decoder = graphs[:2]
    translate = translator(encoder, decoder)
    with pytest.raises(UsageError, match="longer than the encoder's 7"):
        translate(list(range(3, 11)), START, END)
    with pytest.raises(UsageError, match="source token 20 is outside the decoder's vocabulary of 14"):
        translate([3, 20], START, END)
    with pytest.raises(UsageError, match="the end token 99 is outside"):
        translate([3, 4], START, 99)
    with pytest.raises(UsageError, match="the encoder graph takes 2 input"):
        translator(decoder, encoder)
    with pytest.raises(UsageError, match="give its fixed length"):
        translator(Encoder(trained), decoder)
    with pytest.raises(UsageError, match="the decoder gives .*not scores"):
        translator(Encoder(trained), lambda target, memory: memory, source_length=SOURCE, target_length=TARGET)
    with pytest.raises(UsageError, match="do not run as encoder"):
        translator(Encoder(trained), Decoder(trained), source_length=SOURCE, target_length=TARGET + 5)
