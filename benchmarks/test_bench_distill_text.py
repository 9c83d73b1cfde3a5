"""A transformer text classifier lowered the Arch-Net way (issue 12 item 3b) onto archnet-transformer:
its token embedding becomes one-hot times FC (exact), LayerNorm, GELU and attention become students.

Data: which language a word is, from the word-frequency lists pyspellchecker ships inside its wheel
(`spellchecker/resources/{en,de,es,fr,it}.json.gz`, built from OpenSubtitles): the 4,000 most frequent
words of 3-12 letters of each language that are not among another's, so 20,000 real words in 5
classes, shuffled once (seed 0); the first 16,000 train the teacher and, without labels, calibrate
the lowering; the last 4,000 test. Words are character ids (0 pads) of fixed length 12.

Teacher: characters embedded (width 48) plus learned position embeddings, 2 encoder blocks of 4 heads
(LayerNorm, GELU, attention spelled as matmul and softmax), mean over positions, LayerNorm, linear.

Run: .venv/bin/python -m pytest benchmarks/test_bench_distill_text.py -q -s
(skipped without pyspellchecker: `pip install pyspellchecker`, part of the dev extra).
"""

from __future__ import annotations

import gzip
import json
import time
from importlib import resources

import pytest
import torch
from torch import nn

from fxrewrite import lower
from fxrewrite.examples import EncoderBlock, train_classifier
from fxrewrite.frontend import capture

from test_bench_distill_mnist import record_row

LANGUAGES = ("en", "de", "es", "fr", "it")
WORDS_PER_LANGUAGE = 4000
LENGTH = 12
TRAIN, TEST = slice(0, 16000), slice(16000, 20000)

#: archnet has no one-hot encoding, so no student can read token ids there (a DistillError says so)
CASES = {f"text {bits_name}, archnet-transformer": bits
         for bits_name, bits in (("float32", (None, None)), ("4w4a", (4, 4)), ("2w4a", (2, 4)))}


def _frequent_words(language: str) -> list[str]:
    package = pytest.importorskip("spellchecker")
    with resources.files(package).joinpath(f"resources/{language}.json.gz").open("rb") as handle:
        counts = json.loads(gzip.decompress(handle.read()))
    words = sorted((w for w in counts if 3 <= len(w) <= LENGTH and w.isalpha() and w.islower()),
                   key=lambda w: -counts[w])
    return words[:3 * WORDS_PER_LANGUAGE]


@pytest.fixture(scope="module")
def words() -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids (N, LENGTH) int64, labels (N,), vocabulary size)."""
    lists = {language: _frequent_words(language) for language in LANGUAGES}
    seen: dict[str, int] = {}
    for words_of in lists.values():
        for word in words_of:
            seen[word] = seen.get(word, 0) + 1
    chosen = [(word, label) for label, language in enumerate(LANGUAGES)
              for word in [w for w in lists[language] if seen[w] == 1][:WORDS_PER_LANGUAGE]]
    alphabet = sorted({c for word, _ in chosen for c in word})
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    ids = torch.zeros(len(chosen), LENGTH, dtype=torch.long)
    for row, (word, _) in enumerate(chosen):
        ids[row, :len(word)] = torch.tensor([index[c] for c in word])
    labels = torch.tensor([label for _, label in chosen])
    order = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(0))
    return ids[order], labels[order], len(alphabet) + 1


class CharTransformer(nn.Module):
    def __init__(self, vocabulary: int, dim: int = 48, depth: int = 2, heads: int = 4, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, dim)
        self.position = nn.Parameter(torch.randn(1, LENGTH, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, ids):
        return self.head(self.norm(self.blocks(self.embed(ids) + self.position).mean(1)))


@pytest.fixture(scope="module")
def text_teacher(words):
    ids, labels, vocabulary = words
    model = train_classifier(lambda: CharTransformer(vocabulary), ids, labels, epochs=10, train=TRAIN.stop, batch=64)
    with torch.no_grad():
        return model, (model(ids[TEST]).argmax(1) == labels[TEST]).float().mean().item()


@pytest.mark.parametrize("case", list(CASES))
def test_distil_text_classifier(benchmark, words, text_teacher, case):
    ids, labels, _ = words
    model, teacher_top1 = text_teacher
    wbits, abits = CASES[case]
    example = (ids[:1],)
    benchmark.group = "distil a character transformer (language of a word) to archnet-transformer"
    start = time.perf_counter()
    # default training flags: all 16,000 inputs, epochs to a plateau within the time budget
    lowered = benchmark.pedantic(lambda: lower(capture(model, example), example, target="archnet-transformer",
                                               calib=ids[TRAIN], wbits=wbits, abits=abits), rounds=1, iterations=1)
    record_row(case, lowered, model, teacher_top1, ids, labels, time.perf_counter() - start, test=TEST)
    assert lowered.legal
