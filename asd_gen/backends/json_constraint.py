"""Grammar-constrained decoding for in-process transformers models, with llguidance.

Why: a 135M model cannot be trusted to write valid JSON on its own. llguidance compiles the request's JSON
schema into a grammar and, at each decoding step, gives the set of tokens that keep the output a valid prefix;
every other logit is set to -inf. The output therefore always parses and validates against the schema unless
it is cut by `max_tokens` (then the finish reason is "length").

The JSON grammar allows no free whitespace (separators ", " and ": " are fixed): with flexible whitespace
small models tend to emit endless spaces or newlines that still "match".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import llguidance
    import torch
    from llguidance._lib import JsonCompileOptions

# Fixed separators, no free whitespace: see the module docstring.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


class GrammarError(ValueError):
    """The request's JSON schema could not be compiled into a grammar."""


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class _TokenTable:
    """Token id -> bytes, for tokenizers whose decoder llguidance cannot read (Metaspace, SentencePiece).

    Follows llguidance's `TokenizerWrapper` protocol: `tokens`, `eos_token_id`, `bos_token_id`,
    `special_token_ids` and a call that encodes text. Special and padding ids get a leading 0xFF byte, which
    llguidance treats as "never part of text".
    """

    def __init__(self, hf_tokenizer: Any, n_vocab: int) -> None:
        self.eos_token_id = hf_tokenizer.eos_token_id
        self.bos_token_id = hf_tokenizer.bos_token_id
        special = set(hf_tokenizer.all_special_ids)
        pieces = hf_tokenizer.convert_ids_to_tokens(list(range(len(hf_tokenizer))))
        tokens: list[bytes] = []
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                tokens.append(b"\xff" + str(piece or f"<extra_{i}>").encode())
            elif m := _BYTE_PIECE.fullmatch(piece):
                tokens.append(bytes([int(m.group(1), 16)]))
            else:
                tokens.append(piece.replace("\u2581", " ").encode())
        for i in range(len(tokens), n_vocab):  # model rows beyond the tokenizer (padded vocabularies)
            tokens.append(f"\xff<unused_{i}>".encode("latin-1"))
            special.add(i)
        self.tokens = tokens
        self.special_token_ids = sorted(special)
        self._tokenizer = hf_tokenizer

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def __call__(self, text: str) -> list[int]:
        """Tokens of `text` in mid-sequence position: SentencePiece-style tokenizers put a space before the
        first word of a string, so encode after a newline and drop the newline's tokens."""
        head = self._encode("\n")
        ids = self._encode("\n" + text)
        if ids[: len(head)] == head:
            return ids[len(head) :]
        return self._encode(text)


def build_llg_tokenizer(
    hf_tokenizer: Any, n_vocab: int, eos_ids: Sequence[int] | None
) -> llguidance.LLTokenizer:
    """Wrap an HF tokenizer for llguidance once per backend (costs about a second).

    Byte-level BPE tokenizers are read directly; others (SentencePiece-style Metaspace, e.g. Llama-2/LLaVA)
    through a token table built from the vocabulary.
    """
    import llguidance
    import llguidance.hf

    eos: int | list[int] | None = list(eos_ids) if eos_ids else None
    try:
        return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=n_vocab, eos_token=eos)
    except ValueError:  # "can't determine decoder type"
        wrapper = llguidance.TokenizerWrapper(_TokenTable(hf_tokenizer, n_vocab))
        return llguidance.LLTokenizer(wrapper, n_vocab=n_vocab, eos_token=eos)


def nonempty_strings(schema: Any) -> Any:
    """A copy of `schema` where every string must have at least one character (`minLength: 1`).

    Why: under a grammar a small model's cheapest valid string is `""`, which validation then rejects and the
    engine re-asks (most local-backend retries were empty distractors). Only grammar-constrained backends get
    this: OpenAI's strict structured outputs do not accept `minLength`, so the request schema stays as is.
    """
    if isinstance(schema, dict):
        out = {k: nonempty_strings(v) for k, v in schema.items()}
        if out.get("type") == "string" and "minLength" not in out:
            out["minLength"] = 1
        return out
    if isinstance(schema, list):
        return [nonempty_strings(v) for v in schema]
    return schema


def compile_schema(schema: dict[str, Any]) -> str:
    """The llguidance grammar text for a JSON schema (compiled once per distinct schema by the caller)."""
    from llguidance import LLMatcher

    try:
        text = orjson.dumps(nonempty_strings(schema)).decode()
        return LLMatcher.grammar_from_json_schema(text, overrides=JSON_OPTIONS)
    except ValueError as e:
        raise GrammarError(f"cannot compile JSON schema: {e}") from e


def new_matcher(llg_tokenizer: llguidance.LLTokenizer, grammar: str) -> llguidance.LLMatcher:
    """A fresh matcher for one sequence; raises GrammarError if the grammar is invalid for this tokenizer."""
    from llguidance import LLMatcher

    matcher = LLMatcher(llg_tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise GrammarError(matcher.get_error())
    return matcher


def apply_bitmask(scores: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set disallowed logits to -inf in place (bit i of word j allows token 32*j + i).

    Written here rather than using `llguidance.torch.apply_token_bitmask_inplace`, which is wrapped in
    `torch.compile` and would need a C compiler and a long first-call compile on CPU.
    """
    import torch

    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().reshape(bitmask.shape[0], -1)
    vocab = scores.shape[-1]
    allowed = allowed[:, :vocab].to(scores.device)
    if allowed.shape[1] < vocab:  # tokens beyond the grammar's vocabulary are never allowed
        pad = torch.zeros(allowed.shape[0], vocab - allowed.shape[1], dtype=torch.bool, device=scores.device)
        allowed = torch.cat([allowed, pad], dim=1)
    scores.masked_fill_(~allowed, float("-inf"))


class JsonLogitsProcessor:
    """A transformers logits processor that keeps every row of a batch inside its own JSON grammar.

    One matcher per row. On each call it feeds the token chosen at the previous step to the row's matcher,
    then masks the next-token logits. Rows whose matcher has stopped (grammar complete, EOS consumed) are left
    alone: `generate` pads them.
    """

    def __init__(self, matchers: list[llguidance.LLMatcher], vocab_size: int, eos_ids: Sequence[int]) -> None:
        import llguidance
        import llguidance.torch
        import torch

        self.matchers = matchers
        self._executor = llguidance.LLExecutor()
        self._bitmask = llguidance.torch.allocate_token_bitmask(len(matchers), vocab_size)
        # A stopped matcher (grammar complete) must end its row: only EOS stays allowed there.
        words = [0] * self._bitmask.shape[1]
        for t in eos_ids:
            words[int(t) // 32] |= 1 << (int(t) % 32)
        signed = [w - (1 << 32) if w >= 1 << 31 else w for w in words]  # as int32 two's complement
        self._eos_only = torch.tensor(signed, dtype=torch.int32)
        self._started = False
        self.errors: list[str | None] = [None] * len(matchers)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import llguidance.torch

        if self._started:
            last = input_ids[:, -1].tolist()
            for row, m in enumerate(self.matchers):
                if m.is_stopped() or self.errors[row] is not None:
                    continue
                if not m.consume_token(int(last[row])):
                    self.errors[row] = m.get_error() or "token rejected by the grammar"
        self._started = True
        active = [
            (m, row) for row, m in enumerate(self.matchers) if not m.is_stopped() and self.errors[row] is None
        ]
        self._bitmask.fill_(-1)  # rows in error: left unconstrained, reported as errors afterwards
        for row, m in enumerate(self.matchers):
            if m.is_stopped():
                self._bitmask[row] = self._eos_only
        if active:
            llguidance.torch.fill_next_token_bitmask_par(self._executor, active, self._bitmask)
        apply_bitmask(scores, self._bitmask)
        return scores

    def consume_final(self, last_tokens: Sequence[int | None]) -> None:
        """Feed the token chosen at the last step, which `generate` never passes back to the processor."""
        if not self._started:
            return
        for row, tok in enumerate(last_tokens):
            m = self.matchers[row]
            if tok is None or m.is_stopped() or self.errors[row] is not None:
                continue
            if not m.consume_token(int(tok)):
                self.errors[row] = m.get_error() or "token rejected by the grammar"

    def finished(self, row: int) -> bool:
        """Whether row's output is a complete document of the grammar."""
        m = self.matchers[row]
        return self.errors[row] is None and (m.is_stopped() or m.is_accepting())
