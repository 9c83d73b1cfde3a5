"""Greedy decoding with an encoder and a decoder of static shapes: how a lowered translation model is used.

An encoder-decoder is exported as two graphs with fixed lengths, as ExecuTorch exports them:
`encoder(source)` with source token ids (1, S) gives the memory; `decoder(target, memory)` with target
token ids (1, T) gives scores (1, T, V) over a vocabulary of V tokens, the scores at position t reading
target tokens 0..t only (causal attention), so the positions after t may hold anything. A source
shorter than S is padded with `pad` (the model sees it as its training padded it). Decoding starts
from `start` and appends the highest-scoring token at each position until `end` or T tokens:

    y_0 = start,  y_{t+1} = argmax_v decoder([y_0 .. y_t, pad ..], memory)[t, v]

The teacher modules, their exported graphs and lowered students run through the same loop, so their
outputs compare token by token. Every bad input is one UsageError saying what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import fx

from fxrewrite.errors import UsageError
from fxrewrite.ir import tensor_shape

Graph = Callable[..., torch.Tensor]


#: per role, its inputs and how they are written
SIGNATURES = {"encoder": (1, "encoder(source ids)"), "decoder": (2, "decoder(target ids, memory)")}


def _fixed_length(graph: Graph, role: str) -> int | None:
    """The fixed length of a captured graph's token ids, its inputs checked against its role's
    signature; None for a plain module."""
    if isinstance(graph, torch.export.ExportedProgram):
        graph = graph.module()
    if not isinstance(graph, fx.GraphModule):
        return None
    count, written = SIGNATURES[role]
    inputs = [n for n in graph.graph.nodes if n.op == "placeholder"]
    if len(inputs) != count:
        raise UsageError(f"the {role} graph takes {len(inputs)} input(s) where an {role} takes {count}: pass the "
                         f"{role} exported as {written}")
    shape = tensor_shape(inputs[0])
    if shape is None or len(shape) != 2 or shape[0] != 1:
        raise UsageError(f"the {role} graph's first input {inputs[0].name} has shape {shape}, not token ids of "
                         "(1, length): export it at batch 1 with a fixed length")
    return shape[1]


@dataclass(frozen=True)
class Translator:
    """An encoder and a decoder checked to fit each other, with their fixed lengths and vocabulary."""

    encoder: Graph
    decoder: Graph
    source_length: int
    target_length: int
    vocabulary: int
    pad: int

    def __call__(self, source: Sequence[int], start: int, end: int) -> list[int]:
        """The greedy translation of one source sentence (token ids), `start` and `end` left out."""
        for name, token in (("start", start), ("end", end)):
            self._known(token, f"the {name} token")
        if len(source) > self.source_length:
            raise UsageError(f"a source of {len(source)} tokens is longer than the encoder's {self.source_length}: "
                             "export the encoder with a longer maximum, or split the sentence")
        for token in source:
            self._known(token, "source token")
        ids = torch.full((1, self.source_length), self.pad, dtype=torch.long)
        ids[0, :len(source)] = torch.tensor(list(source), dtype=torch.long)
        with torch.no_grad():
            memory = self.encoder(ids)
            target = torch.full((1, self.target_length), self.pad, dtype=torch.long)
            target[0, 0] = start
            out: list[int] = []
            for position in range(self.target_length - 1):
                token = int(self.decoder(target, memory)[0, position].argmax())
                if token == end:
                    break
                out.append(token)
                target[0, position + 1] = token
        return out

    def _known(self, token: int, what: str) -> None:
        if not 0 <= token < self.vocabulary:
            raise UsageError(f"{what} {token} is outside the decoder's vocabulary of {self.vocabulary} tokens: the "
                             "tokenizer and the model do not match")


def translator(encoder: Graph, decoder: Graph, *, source_length: int | None = None,
               target_length: int | None = None, pad: int = 0) -> Translator:
    """The encoder and decoder (modules, exported programs or lowered graphs) as a Translator, their
    fixed lengths read from captured graphs or given for plain modules, checked by one run on padding."""
    lengths = {}
    for role, graph, given in (("encoder", encoder, source_length), ("decoder", decoder, target_length)):
        found = _fixed_length(graph, role)
        if found is not None and given is not None and found != given:
            raise UsageError(f"the {role} graph takes {found} tokens, not the {given} given")
        if found is None and given is None:
            raise UsageError(f"the {role} is a plain module: give its fixed length "
                             f"({'source_length' if role == 'encoder' else 'target_length'}=...)")
        lengths[role] = found if found is not None else given
    encoder, decoder = (g.module() if isinstance(g, torch.export.ExportedProgram) else g for g in (encoder, decoder))
    try:
        with torch.no_grad():
            memory = encoder(torch.full((1, lengths["encoder"]), pad, dtype=torch.long))
            scores = decoder(torch.full((1, lengths["decoder"]), pad, dtype=torch.long), memory)
    except Exception as error:  # any failure of the user's graphs on well-formed ids: a signature that does not fit
        raise UsageError(f"the encoder and decoder do not run as encoder(source ids) and decoder(target ids, memory) "
                         f"on padding: {type(error).__name__}: {error}") from None
    if not isinstance(scores, torch.Tensor) or scores.dim() != 3 or tuple(scores.shape[:2]) != (1, lengths["decoder"]):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise UsageError(f"the decoder gives {shape}, not scores of (1, {lengths['decoder']}, vocabulary)")
    return Translator(encoder, decoder, lengths["encoder"], lengths["decoder"], scores.shape[2], pad)
