"""The latent probe on a model with a planted feature: fitted once, reapplied unchanged after "later stages".

The model is a cumulative-sum LM: the hidden state at a position is the sum of the embeddings of the tokens
so far, and the embedding rows of three colour words carry one-hot codes in dimensions 0-2 (the planted
feature). A later stage that keeps those dimensions keeps the probe's accuracy; one that moves the code to
other dimensions drops it to chance even though a refit would still find it (the probe is not refitted).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sefe.evaluation.latent_probe import LinearProbe, fit_probe, last_prompt_states

COLOURS = ("red", "blue", "green")
FILLER = ("object", "picture", "shape", "thing", "one", "item")


class CumsumLM(torch.nn.Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Embedding.from_pretrained(table, freeze=True)

    @property
    def dtype(self) -> torch.dtype:
        return self.table.weight.dtype

    def forward(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        hidden = self.table(input_ids).cumsum(1)
        return SimpleNamespace(hidden_states=(hidden * 0, hidden), logits=None)


@pytest.fixture(scope="module")
def processor() -> Any:
    from sefe.models.tiny import TinyLlavaConfig, build_tokenizer

    return SimpleNamespace(tokenizer=build_tokenizer(TinyLlavaConfig()))


def _colour_ids(processor: Any) -> list[int]:
    ids = [processor.tokenizer(f" {c}", add_special_tokens=False).input_ids for c in COLOURS]
    assert all(len(i) == 1 for i in ids)  # one token each: the plant is one embedding row
    return [i[0] for i in ids]


def _prompts(n: int, seed: int) -> tuple[list[tuple[str, None]], list[str]]:
    g = torch.Generator().manual_seed(seed)
    prompts, labels = [], []
    for j in range(n):
        colour = COLOURS[j % 3]
        filler = " ".join(
            FILLER[int(k)]
            for k in torch.randint(len(FILLER), (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
        )
        prompts.append((f"Look at the {filler} that is {colour} and the {filler}. What colour?", None))
        labels.append(colour)
    return prompts, labels


def test_planted_feature_is_read_kept_and_lost_when_moved(processor: Any, tmp_path: Path) -> None:
    vocab = len(processor.tokenizer)
    g = torch.Generator().manual_seed(0)
    table = 0.05 * torch.randn(vocab, 16, generator=g)
    table[:, :6] = 0.0
    for c, tok in enumerate(_colour_ids(processor)):
        table[tok] = 0.0
        table[tok, c] = 1.0  # the plant, the colour's only trace
    train_p, train_y = _prompts(60, seed=1)
    test_p, test_y = _prompts(30, seed=2)
    stage_i = CumsumLM(table)
    probe = fit_probe(last_prompt_states(stage_i, processor, train_p, batch_size=7), train_y)
    assert probe.fit_accuracy == 100.0
    assert probe.accuracy(last_prompt_states(stage_i, processor, test_p), test_y) == 100.0
    probe.save(tmp_path / "Colour.json")
    same = LinearProbe.load(tmp_path / "Colour.json")  # reapplied unchanged, from disk
    kept = table.clone()
    kept[:, 6:] += 0.05 * torch.randn(vocab, 10, generator=g)  # a later stage that leaves the code alone
    assert same.accuracy(last_prompt_states(CumsumLM(kept), processor, test_p), test_y) == 100.0
    moved = table.clone()
    moved[:, 3:6], moved[:, 0:3] = table[:, 0:3], 0.0  # a later stage that moves the code elsewhere
    later = last_prompt_states(CumsumLM(moved), processor, test_p)
    assert same.accuracy(later, test_y) <= 50.0  # 3 classes: chance 33 %
    assert fit_probe(later, test_y).fit_accuracy == 100.0  # still there: a refit would find it


def test_states_are_taken_at_the_last_prompt_token_whatever_the_padding(processor: Any) -> None:
    from sefe.models.tokenization import tokenize_record

    vocab = len(processor.tokenizer)
    model = CumsumLM(torch.randn(vocab, 8, generator=torch.Generator().manual_seed(3)))
    prompts = [("Short?", None), ("A much longer question with many more words in it?", None)]
    batched = last_prompt_states(model, processor, prompts)
    for row, (q, _) in zip(batched, prompts, strict=True):
        ids, labels = tokenize_record([(q, "x")], processor.tokenizer, 0)
        last = next(j for j, lab in enumerate(labels) if lab != -100) - 1
        alone = model.table(torch.tensor(ids[: last + 1])).sum(0)
        assert torch.allclose(row, alone, atol=1e-5)
