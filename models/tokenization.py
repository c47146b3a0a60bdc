"""vicuna_v1 token ids and labels exactly as LLaVA-1.5's `preprocess_v1` makes them (the paper's data).

Three release behaviours decide which tokens the model sees and learns, and all three are reproduced here:

- **Chunks around the image.** The prompt is split on `<image>`; every chunk is tokenised alone (each with
  BOS, dropped for all chunks but the first) and the chunks are joined by one placeholder
  (`IMAGE_PLACEHOLDER`), which the collator later expands into the model's image-token ids. Tokenising alone
  means the text after the image starts with a word-prefix token (`▁`, 29871 in LLaMA) and the text before
  it ends with one: the ids a released checkpoint was trained on.
- **Labels by counting.** The string is split on `</s>`; per round the round's token count and the count of
  its part up to `" ASSISTANT: "` minus 2 decide what is masked, so a lone `▁` before a digit answer stays in
  the loss; for later rounds of a non-legacy tokenizer both counts drop by one; if the counted length differs
  from the real length the whole sample is masked (`Preprocessed.mismatch`), never trained misaligned.
- **The tokenizer itself.** The release used transformers 4.37's SentencePiece `LlamaTokenizer`.
  transformers 5's Llama tokenizer is not SentencePiece (runs of spaces merge differently), so when the
  tokenizer has a `tokenizer.model` and `sentencepiece` is installed, `chunk_tokenizer` returns
  `SentencePieceLlama`, a re-statement of the 4.37 slow tokenizer (special-token splitting, `legacy` rules).
  Any other tokenizer (the tiny model's BPE, a folder without `tokenizer.model`) is used as it is through
  `HFChunkTokenizer`: the chunking and the counting work with any tokenizer that adds one BOS.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sefe.models.conversation import ASSISTANT, EOS, IGNORE_INDEX, IMAGE_TOKEN, Turn, conversation_spans

#: LLaVA's `IMAGE_TOKEN_INDEX`: one id standing for the whole image until the collator expands it.
IMAGE_PLACEHOLDER = -200
SPIECE_UNDERLINE = "▁"

log = logging.getLogger(__name__)


class ChunkTokenizer(Protocol):
    """What the release algorithm needs: `tokenizer(text).input_ids`, BOS/pad ids and the legacy flag."""

    bos_token_id: int | None
    pad_token_id: int | None
    legacy: bool

    def encode(self, text: str) -> list[int]: ...


def release_prompt(turns: Sequence[Turn]) -> str:
    """LLaVA's vicuna_v1 string: `SYSTEM USER: q ASSISTANT: a</s>USER: ...` (no space after `</s>`)."""
    return conversation_spans(turns)[0]


def tokenizer_image_token(prompt: str, tok: ChunkTokenizer) -> list[int]:
    """LLaVA's `tokenizer_image_token`: chunks split on `<image>`, joined by one `IMAGE_PLACEHOLDER`."""
    chunks = [tok.encode(chunk) for chunk in prompt.split(IMAGE_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and tok.bos_token_id is not None and chunks[0][0] == tok.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_PLACEHOLDER)
        ids.extend(chunk[offset:])
    return ids


@dataclass
class Preprocessed:
    """One record's ids (with at most one `IMAGE_PLACEHOLDER`) and labels; `mismatch` = counted vs real."""

    input_ids: list[int]
    labels: list[int]
    mismatch: tuple[int, int] | None = None


def preprocess_v1(
    turns: Sequence[Turn], tok: ChunkTokenizer, has_image: bool, max_length: int = 2048
) -> Preprocessed:
    """Ids and labels of one vicuna_v1 record as the release computes them.

    `turns` already carry `<image>\\n` in front of the image's question (`move_image_to_front`). Text-only
    records are truncated to `max_length` here (the release's tokenizer call truncates them); image records
    are truncated after the image is expanded (`truncate_expanded`), as the release's model does.
    """
    conversation = release_prompt(turns)
    ids = tokenizer_image_token(conversation, tok) if has_image else tok.encode(conversation)[:max_length]

    def count(text: str) -> int:
        return len(tokenizer_image_token(text, tok)) if has_image else len(tok.encode(text))

    labels = list(ids)
    pad = tok.pad_token_id
    total_len = sum(1 for i in ids if i != pad)
    sep = f" {ASSISTANT}: "
    cur_len = 1
    _mask(labels, 0, cur_len)
    for i, rou in enumerate(conversation.split(EOS)):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        round_len = count(rou)
        instruction_len = count(parts[0] + sep) - 2
        if i != 0 and not tok.legacy:
            round_len -= 1
            instruction_len -= 1
        _mask(labels, cur_len, cur_len + instruction_len)
        cur_len += round_len
    _mask(labels, cur_len, len(labels))
    if cur_len < max_length and cur_len != total_len:
        return Preprocessed(ids, [IGNORE_INDEX] * len(ids), mismatch=(cur_len, total_len))
    return Preprocessed(ids, labels)


def _mask(labels: list[int], start: int, stop: int) -> None:
    """`target[start:stop] = IGNORE_INDEX` with Python's (and torch's) slice semantics."""
    n = len(range(len(labels))[start:stop])
    labels[start:stop] = [IGNORE_INDEX] * n


def expanded_length(ids: Sequence[int], image_tokens: int) -> int:
    """Length after the placeholder becomes `image_tokens` ids."""
    return len(ids) + sum(image_tokens - 1 for i in ids if i == IMAGE_PLACEHOLDER)


def truncate_expanded(
    ids: list[int], labels: list[int], image_tokens: int, max_length: int, where: str = "record"
) -> tuple[list[int], list[int]]:
    """Cut placeholder ids so that, once expanded, they are `max_length` long (the release cuts the embedded
    sequence there). A cut through the image block is refused: the model needs all its features."""
    if expanded_length(ids, image_tokens) <= max_length:
        return ids, labels
    keep, size = 0, 0
    for i in ids:
        step = image_tokens if i == IMAGE_PLACEHOLDER else 1
        if size + step > max_length:
            if i == IMAGE_PLACEHOLDER:
                raise ValueError(
                    f"{where}: max_length {max_length} would cut the image block "
                    f"(tokens {size}..{size + image_tokens})"
                )
            break
        keep, size = keep + 1, size + step
    if IMAGE_PLACEHOLDER in ids[keep:]:
        raise ValueError(f"{where}: max_length {max_length} would cut the image block (it starts later)")
    return ids[:keep], labels[:keep]


def expand_image(ids: Sequence[int], labels: Sequence[int], image_token_id: int, image_tokens: int):
    """Replace each placeholder by `image_tokens` copies of the model's image-token id (labels ignored)."""
    out_ids: list[int] = []
    out_labels: list[int] = []
    for i, lab in zip(ids, labels, strict=True):
        if i == IMAGE_PLACEHOLDER:
            out_ids.extend([image_token_id] * image_tokens)
            out_labels.extend([IGNORE_INDEX] * image_tokens)
        else:
            out_ids.append(i)
            out_labels.append(lab)
    return out_ids, out_labels


def preprocess_offsets(
    turns: Sequence[Turn], tokenizer: Any, has_image: bool, max_length: int = 2048
) -> Preprocessed:
    """The release's prompt and image chunking, with labels found by character offsets instead of counts.

    For tokenizers the release's counting does not fit (any whose pieces do not split like LLaMA's around
    `ASSISTANT:` and `</s>`, such as the tiny model's BPE): exactly the answer characters and their `</s>` are
    learned. Needs a fast (tokenizers-backed) tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("offset labels need a fast (tokenizers-backed) tokenizer; use tokenization 'release'")
    text, spans = conversation_spans(turns)
    chunks = text.split(IMAGE_TOKEN) if has_image else [text]
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    labels: list[int] = []
    base = 0
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_PLACEHOLDER)
            labels.append(IGNORE_INDEX)
            base += len(IMAGE_TOKEN)
        enc = tokenizer(chunk, add_special_tokens=True, return_offsets_mapping=True)
        for tid, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            if k and tid == bos and end <= start:
                continue  # the BOS of every chunk but the first is dropped, as in the release
            a, b = base + start, base + end
            inside = b > a and any(a < s_end and b > s_start for s_start, s_end in spans)
            ids.append(tid)
            labels.append(tid if inside else IGNORE_INDEX)
        base += len(chunk)
    if not has_image:
        ids, labels = ids[:max_length], labels[:max_length]
    return Preprocessed(ids, labels)


TOKENIZATION_MODES = ("auto", "release", "offsets")


def preprocess_record(
    turns: Sequence[Turn],
    tokenizer: Any,
    chunk_tok: ChunkTokenizer,
    has_image: bool,
    max_length: int = 2048,
    mode: str = "auto",
) -> Preprocessed:
    """`release` (LLaVA's counting), `offsets`, or `auto`: release on the LLaMA SentencePiece vocabulary
    (where the release's arithmetic was made for), offsets for any other tokenizer."""
    if mode not in TOKENIZATION_MODES:
        raise ValueError(f"tokenization must be one of {TOKENIZATION_MODES}, got {mode!r}")
    if mode == "auto":
        mode = "release" if isinstance(chunk_tok, SentencePieceLlama) else "offsets"
    if mode == "release":
        return preprocess_v1(turns, chunk_tok, has_image, max_length)
    return preprocess_offsets(turns, tokenizer, has_image, max_length)


# ---- tokenizers ----------------------------------------------------------------------------------------


class HFChunkTokenizer:
    """Any transformers tokenizer: `tokenizer(text).input_ids` with its own special-token rules."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.bos_token_id = tokenizer.bos_token_id
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.unk_token_id
        self.legacy = release_legacy(tokenizer)

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.bos_token_id
        if bos is not None and (not ids or ids[0] != bos) and _adds_bos(self.tokenizer):
            ids.insert(0, bos)
        return ids


def _adds_bos(tokenizer: Any) -> bool:
    """Llama tokenizers built from `tokenizer.model` alone can lose the BOS post-processor; LLaVA adds BOS."""
    return bool(getattr(tokenizer, "add_bos_token", False))


class SentencePieceLlama:
    """transformers 4.37's slow `LlamaTokenizer` (what the release used) on a SentencePiece model file.

    Text is split on the special/added tokens (each becomes its id); the pieces between are SentencePiece
    encoded. `legacy=True`: every piece gets SentencePiece's dummy prefix `▁`. `legacy=False`: only the text's
    start does (the model is loaded without the dummy prefix; `▁` is prepended to the whole text, and a piece
    that starts with a space is encoded behind `<unk>` so that its first space is kept), so text right after
    `</s>` starts without `▁`.
    """

    def __init__(
        self,
        model_file: str | Path,
        legacy: bool,
        special_tokens: dict[str, int] | None = None,
        add_bos: bool = True,
    ) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        self.model_file = str(model_file)
        self.legacy = legacy
        sp = spm.SentencePieceProcessor(model_file=self.model_file)
        if not legacy:
            proto = pb.ModelProto.FromString(sp.serialized_model_proto())
            proto.normalizer_spec.add_dummy_prefix = False
            sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.sp = sp
        unk, bos, eos = sp.unk_id(), sp.bos_id(), sp.eos_id()
        self.unk_piece = sp.id_to_piece(unk)
        specials = {self.unk_piece: unk, sp.id_to_piece(bos): bos, sp.id_to_piece(eos): eos}
        specials.update(special_tokens or {})
        # Longest first: where two added tokens start at the same place the longer one wins.
        self.specials = dict(sorted(specials.items(), key=lambda kv: -len(kv[0])))
        self.bos_token_id: int | None = bos if add_bos else None
        self.pad_token_id: int | None = unk  # LLaVA v1: pad = unk
        self._underline = sp.piece_to_id(SPIECE_UNDERLINE)
        self._unk_len = len(sp.encode(self.unk_piece))

    def _split(self, text: str) -> list[str | int]:
        """Text segments and special-token ids, in order (empty segments dropped)."""
        out: list[str | int] = []
        start = 0
        i = 0
        while i < len(text):
            hit = next((tok for tok in self.specials if text.startswith(tok, i)), None)
            if hit is None:
                i += 1
                continue
            if i > start:
                out.append(text[start:i])
            out.append(self.specials[hit])
            i += len(hit)
            start = i
        if start < len(text):
            out.append(text[start:])
        return out

    def _encode_piece(self, text: str) -> list[int]:
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return list(self.sp.encode(text))
        ids = list(self.sp.encode(self.unk_piece + text))
        return ids[self._unk_len :] if len(ids) >= self._unk_len else ids

    def tokenize_ids(self, text: str) -> list[int]:
        """Ids of `text` without BOS (the slow tokenizer's `tokenize` + `convert_tokens_to_ids`)."""
        if not text:
            return []
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        ids: list[int] = []
        for part in self._split(text):
            ids.extend([part] if isinstance(part, int) else self._encode_piece(part))
        special = set(self.specials.values())
        if not self.legacy and len(ids) > 1 and ids[0] == self._underline and ids[1] in special:
            ids = ids[1:]
        return ids

    def encode(self, text: str) -> list[int]:
        ids = self.tokenize_ids(text)
        return [self.bos_token_id, *ids] if self.bos_token_id is not None else ids


def release_legacy(tokenizer: Any) -> bool:
    """The `legacy` flag the release's tokenizer would have had for this tokenizer.

    transformers 4.37's slow Llama tokenizer took `legacy` from `tokenizer_config.json` and defaulted to True
    when the key is absent; transformers 5 defaults to False, so for a folder without the key the attribute
    would flip the release's behaviour. Order: an explicit `legacy=` argument, the folder's
    `tokenizer_config.json` (True without the key), the tokenizer's `legacy` attribute, True.
    """
    explicit = getattr(tokenizer, "init_kwargs", {}).get("legacy")
    if explicit is not None:
        return bool(explicit)
    name = getattr(tokenizer, "name_or_path", None)
    config = Path(str(name)) / "tokenizer_config.json" if name else None
    if config is not None and config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return bool(data.get("legacy", True)) if isinstance(data, dict) else True
    return bool(getattr(tokenizer, "legacy", True))


def sentencepiece_file(tokenizer: Any) -> Path | None:
    """The `tokenizer.model` behind a transformers tokenizer, when it has one on disk."""
    kwargs = getattr(tokenizer, "init_kwargs", {})
    candidates = [getattr(tokenizer, "vocab_file", None), kwargs.get("vocab_file")]
    name = getattr(tokenizer, "name_or_path", None)
    if name:
        candidates.append(os.path.join(str(name), "tokenizer.model"))
    for c in candidates:
        if isinstance(c, str | Path) and str(c).endswith(".model") and Path(c).is_file():
            return Path(c)
    return None


def chunk_tokenizer(tokenizer: Any, backend: str = "auto") -> ChunkTokenizer:
    """The tokenizer the release algorithm runs on: `sentencepiece` (exact 4.37 behaviour), `hf`, or `auto`
    (SentencePiece when the tokenizer has a `tokenizer.model` and the package is installed)."""
    if backend not in ("auto", "sentencepiece", "hf"):
        raise ValueError(f"tokenizer backend must be auto, sentencepiece or hf, got {backend!r}")
    model = sentencepiece_file(tokenizer) if backend != "hf" else None
    if backend == "sentencepiece" and model is None:
        raise FileNotFoundError(
            f"tokenizer backend 'sentencepiece': no tokenizer.model found for {tokenizer.name_or_path!r}"
        )
    if model is not None:
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            if backend == "sentencepiece":
                raise ImportError("tokenizer backend 'sentencepiece': `pip install sentencepiece`") from None
            model = None
    if model is None:
        return HFChunkTokenizer(tokenizer)
    specials = {str(t): int(i) for t, i in getattr(tokenizer, "added_tokens_encoder", {}).items()}
    specials.pop(IMAGE_TOKEN, None)  # split out before tokenising; never part of a chunk
    enc = SentencePieceLlama(model, legacy=release_legacy(tokenizer), special_tokens=specials)
    if tokenizer.pad_token_id is not None:
        enc.pad_token_id = tokenizer.pad_token_id
    return enc


def tokenize_record(
    turns: Sequence[Turn],
    tokenizer: Any,
    image_token_count: int,
    max_length: int | None = None,
    where: str = "record",
    mode: str = "auto",
) -> tuple[list[int], list[int]]:
    """Model-ready ids and labels of one record, exactly as training makes them (image expanded).

    `image_token_count` > 0: the record has an image (its `<image>` moved to the front of its turn, expanded
    to that many image-token ids); 0: text-only. For callers outside the dataset (the knowledge probe).
    """
    from sefe.models.conversation import move_image_to_front

    has_image = image_token_count > 0
    turns = move_image_to_front(turns, has_image, where=where)
    limit = max_length if max_length is not None else 1 << 62
    pre = preprocess_record(turns, tokenizer, cached_chunk_tokenizer(tokenizer), has_image, limit, mode)
    ids, labels = pre.input_ids, pre.labels
    if has_image:
        ids, labels = truncate_expanded(ids, labels, image_token_count, limit, where)
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        ids, labels = expand_image(ids, labels, image_id, image_token_count)
    return ids, labels


def cached_chunk_tokenizer(tokenizer: Any, backend: str = "auto") -> ChunkTokenizer:
    """`chunk_tokenizer`, built once per tokenizer object (loading a SentencePiece model is not free)."""
    cache = tokenizer.__dict__.setdefault("_sefe_chunk_tokenizers", {})
    if backend not in cache:
        cache[backend] = chunk_tokenizer(tokenizer, backend)
    return cache[backend]


def image_token_count(processor: Any) -> int:
    """Image tokens per image in the prompt (576 for CLIP-L/14 at 336 px with the 'default' strategy)."""
    crop = getattr(processor.image_processor, "crop_size", None)
    if crop is not None:
        side_h, side_w = crop["height"], crop["width"]
    else:
        size = processor.image_processor.size
        side_h = side_w = size.get("shortest_edge") or size["height"]
    n = (side_h // processor.patch_size) * (
        side_w // processor.patch_size
    ) + processor.num_additional_image_tokens
    if processor.vision_feature_select_strategy == "default":
        n -= 1
    return n


def generation_inputs(processor: Any, prompts: Sequence[str], images: Sequence[Any]) -> dict[str, Any]:
    """Left-padded generation inputs with the prompts tokenised as the release's evaluation does them.

    LLaVA's evaluation scripts also go through `tokenizer_image_token`, so the ids around the image are the
    chunked ones training used (not those of the processor's expanded text); the placeholder becomes the
    model's image-token ids. `images` are those of the prompts that carry `<image>`, in order.
    """
    import torch

    tok = processor.tokenizer
    enc = cached_chunk_tokenizer(tok)
    image_id = getattr(processor, "image_token_id", None)
    if image_id is None:
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    count = image_token_count(processor) if images else 0
    rows = []
    for prompt in prompts:
        ids = tokenizer_image_token(prompt, enc)
        rows.append(expand_image(ids, ids, int(image_id), count)[0])
    placeholders = sum(prompt.count(IMAGE_TOKEN) for prompt in prompts)
    if placeholders != len(images):
        raise ValueError(f"{placeholders} {IMAGE_TOKEN} tokens in the prompts but {len(images)} images")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), int(pad), dtype=torch.long)
    attention = torch.zeros((len(rows), longest), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, longest - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention[k, longest - len(row) :] = 1
    out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
    if images:
        pixels = processor.image_processor(images=list(images), return_tensors="pt")
        out["pixel_values"] = pixels["pixel_values"]
    return out


def save_tokenizer_files(tokenizer: Any, folder: str | Path) -> None:
    """Keep what the release's tokenisation needs in a saved model folder (a merged stage).

    transformers 5 saves a Llama tokenizer as `tokenizer.json` only: without this, the next stage would lose
    the SentencePiece model (falling back to transformers' tokenizer and offset labels) and the `legacy`
    flag the run used. The model file is copied beside it and `legacy` written into `tokenizer_config.json`.
    """
    folder = Path(folder)
    src = sentencepiece_file(tokenizer)
    if src is None:
        return
    dest = folder / "tokenizer.model"
    if not dest.exists():
        shutil.copyfile(src, dest)
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    if data.get("legacy") is None:
        data["legacy"] = release_legacy(tokenizer)
        config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
