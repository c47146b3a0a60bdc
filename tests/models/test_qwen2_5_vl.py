"""The Qwen2.5-VL family on a tiny model with the real Qwen2.5 vocabulary (CPU, no downloads).

The vocabulary is llama.cpp's `ggml-vocab-qwen2.gguf` from the llama-cpp-python sdist (`make install`
fetches it; see `sefe.models.vocab`), anchored here by llama.cpp's own reference tokenisations and by
transformers' Qwen2.5-VL config defaults (the ids of the vision tokens). Skipped only when the vocabulary is
absent and `SEFE_REQUIRE_VOCAB` is unset; `make test` sets it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sefe.models import qwen2_5_vl as qwen
from sefe.models import vocab
from sefe.models.family import get_family
from tests.helpers.qwen import label_runs, noise_image, require_qwen_vocab

VOCAB_DIR = vocab.vocab_dir()  # resolved at import: later fixtures may point SEFE_CACHE elsewhere
FAMILY = get_family("qwen2_5_vl")
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
SHORT = "Answer the question using a single word or phrase."


@pytest.fixture(scope="module")
def qwen_vocab() -> Path:
    return require_qwen_vocab(VOCAB_DIR)


@pytest.fixture(scope="module")
def qwen_dir(qwen_vocab: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return FAMILY.tiny_dir(tmp_path_factory.mktemp("sefe-cache"))


@pytest.fixture(scope="module")
def tiny_qwen(qwen_dir: Path):
    return FAMILY.load(qwen_dir)


# ---- the vocabulary ------------------------------------------------------------------------------------


def test_qwen2_vocabulary_reproduces_llama_cpp(qwen_vocab: Path) -> None:
    tok = vocab.qwen2_tokenizer(qwen_vocab)
    cases = vocab.reference_cases(qwen_vocab, vocab.QWEN2_GGUF_NAME)
    assert len(cases) > 40
    wrong = [(text, ids) for text, ids in cases if tok(text, add_special_tokens=False)["input_ids"] != ids]
    assert wrong == []


def test_added_tokens_sit_where_qwen2_5_vl_expects_them(qwen_vocab: Path) -> None:
    from transformers import Qwen2_5_VLConfig

    tok = vocab.qwen2_tokenizer(qwen_vocab)
    defaults = Qwen2_5_VLConfig()
    assert len(tok) == 151665
    assert tok.convert_tokens_to_ids("<|image_pad|>") == defaults.image_token_id == 151655
    assert tok.convert_tokens_to_ids("<|video_pad|>") == defaults.video_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == defaults.vision_start_token_id
    assert tok.convert_tokens_to_ids("<|vision_end|>") == defaults.vision_end_token_id
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        151643,
        151644,
        151645,
    ]
    assert tok("a<|image_pad|>b", add_special_tokens=False)["input_ids"][1] == 151655  # one id, never split


# ---- records -> ids and labels -------------------------------------------------------------------------

RECORDS = {
    "single": ([(f"<image>\nWhat is the object in the image?\n{SHORT}", "Espresso maker")], (200, 100)),
    "multi": (
        [
            (f"What are the colors of the bus?\n<image>\n{SHORT}", "White and red"),
            (f"What feature can be seen on the back?\n{SHORT}", "Advertisement"),
        ],
        (56, 56),
    ),
    "text": ([("Which is a solid?\nA. milk\nB. rock\nAnswer with the option's letter.", "B")], None),
    "grounding": (
        [
            (
                "<image>\nPlease provide the bounding box coordinate of the region: the man on the left",
                "[63, 56, 189, 112]",
            )
        ],
        (640, 480),
    ),
}


def test_single_turn_rendering_is_chatml(tiny_qwen) -> None:
    _, proc = tiny_qwen
    msgs = qwen.messages([("<image>\nWhat is it?", "A cat.")], has_image=True)
    assert qwen.render(proc, msgs, add_generation_prompt=False) == (
        f"{SYSTEM}<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
    )
    assert qwen.render(proc, msgs[:1], add_generation_prompt=True).endswith(
        "<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_ids_are_the_templates_and_labels_exactly_the_answers(tiny_qwen, kind: str) -> None:
    _, proc = tiny_qwen
    tok = proc.tokenizer
    turns, size = RECORDS[kind]
    image = noise_image(*size) if size else None
    enc = FAMILY.encode(proc, turns, image, max_length=4096)

    # ids: the chat template's own rendering with the image slot expanded as the processor would
    count = qwen.image_token_count(size, proc.image_processor) if size else 0
    text = qwen.render(proc, qwen.messages(turns, image is not None), add_generation_prompt=False)
    text = text.replace("<|image_pad|>", "<|image_pad|>" * count)
    assert enc.input_ids == tok(text, add_special_tokens=False)["input_ids"]
    assert enc.input_ids.count(proc.image_token_id) == count

    # labels: one contiguous run per assistant turn, right after `<|im_start|>assistant\n`, holding exactly
    # the answer's tokens and `<|im_end|>`
    runs = label_runs(enc.input_ids, enc.labels, tok)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert runs == [tok(a, add_special_tokens=False)["input_ids"] + [im_end] for _, a in turns]


def test_a_question_smuggling_an_image_slot_is_refused(tiny_qwen) -> None:
    from sefe.errors import InputError

    _, proc = tiny_qwen
    with pytest.raises(InputError, match="image slots"):
        FAMILY.encode(
            proc, [("look <|image_pad|> here", "no")], None, max_length=512, where="t.json, record 3"
        )


def test_max_length_cuts_text_but_never_thenoise_image(tiny_qwen) -> None:
    _, proc = tiny_qwen
    turns = [("<image>\nDescribe it.", "A long answer " * 20)]
    full = FAMILY.encode(proc, turns, noise_image(56, 56), max_length=4096)
    cut = FAMILY.encode(proc, turns, noise_image(56, 56), max_length=40)
    assert len(cut.input_ids) == 40 and cut.input_ids == full.input_ids[:40]
    with pytest.raises(ValueError, match="image block"):
        FAMILY.encode(proc, turns, noise_image(640, 480), max_length=20)


# ---- dynamic resolution --------------------------------------------------------------------------------


def test_image_token_counts_follow_the_image_size(tiny_qwen) -> None:
    model, proc = tiny_qwen
    # tiny processor: 56² .. 28²·64 pixels; 56x56 -> 2x2 merged; 200x100 -> 196x112 -> 7x4;
    # 640x480 is over the budget and shrinks to 252x168 -> 9x6
    sizes = {(56, 56): 4, (200, 100): 28, (640, 480): 54}
    items = []
    for (w, h), expected in sizes.items():
        assert qwen.image_token_count((w, h), proc.image_processor) == expected
        enc = FAMILY.encode(proc, [("<image>\nWhat?", "x")], noise_image(w, h), max_length=4096)
        assert enc.input_ids.count(proc.image_token_id) == expected
        assert int(enc.vision["image_grid_thw"].prod()) == 4 * expected
        items.append(enc)
    items.append(FAMILY.encode(proc, RECORDS["text"][0], None, max_length=4096))
    batch = FAMILY.collate(proc, items)
    assert batch["image_grid_thw"].shape == (3, 3)
    assert batch["pixel_values"].shape[0] == 4 * sum(sizes.values())
    assert batch["mm_token_type_ids"].sum(dim=1).tolist() == [*sizes.values(), 0]
    assert (batch["attention_mask"].sum(dim=1) == torch.tensor([len(e.input_ids) for e in items])).all()
    with torch.no_grad():
        out = model(**batch)  # the model checks that every image's features fill its slots exactly
    assert torch.isfinite(out.loss)


# ---- boxes ---------------------------------------------------------------------------------------------


def test_box_worked_example_of_the_docstring() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    real = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056)  # Qwen2.5-VL's released settings
    assert qwen.resized_size((640, 480), real) == (644, 476)
    assert qwen.coin_box_to_qwen([0.25, 0.375, 0.75, 0.625], (640, 480), (644, 476)) == [161, 159, 483, 317]
    back = qwen.qwen_box_to_coin([161, 159, 483, 317], (640, 480), (644, 476))
    assert qwen.coin_box_text(back) == "[0.25, 0.38, 0.75, 0.62]"


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (333, 500), (56, 56), (1000, 90)])
def test_box_round_trip_within_half_a_resized_pixel(tiny_qwen, size: tuple[int, int]) -> None:
    _, proc = tiny_qwen
    w, h = size
    side = max(w, h)
    # boxes inside the image (CoIN's pad offsets), at corners and in the middle
    lo_x, lo_y = (side - w) / 2 / side, (side - h) / 2 / side
    boxes = [
        [lo_x, lo_y, 1 - lo_x, 1 - lo_y],
        [lo_x + 0.01, lo_y + 0.02, lo_x + 0.2 * w / side, lo_y + 0.3 * h / side],
        [0.5 - 0.1 * w / side, 0.5 - 0.1 * h / side, 0.5 + 0.05 * w / side, 0.5 + 0.2 * h / side],
    ]
    rw, rh = qwen.resized_size(size, proc.image_processor)
    tol = 0.5 * max(w / rw, h / rh) / side + 1e-9
    for box in boxes:
        there = FAMILY.box_to_family(box, size, proc)
        assert all(float(v).is_integer() for v in there) and min(there) >= 0 and max(there) <= max(rw, rh)
        back = FAMILY.box_from_family(there, size, proc)
        assert max(abs(a - b) for a, b in zip(back, box, strict=True)) <= tol


def test_grounding_text_round_trip_keeps_coin_spelling(tiny_qwen) -> None:
    from sefe.evaluation.scorers import parse_box_compat, parse_box_fixed

    _, proc = tiny_qwen
    size = (640, 480)
    coin = "[0.12, 0.25, 0.56, 0.75]"
    trained = FAMILY.target_to_family(coin + " The man on the left.", size, proc)
    assert trained.startswith("[") and trained.endswith("] The man on the left.")
    assert all(part.strip().isdigit() for part in trained[1 : trained.index("]")].split(","))
    answer = FAMILY.answer_from_family(trained.split(" The")[0], size, proc)
    assert answer.startswith("[0.") and answer.count(",") == 3
    fixed, original = parse_box_fixed(answer), parse_box_fixed(coin)
    assert fixed is not None and original is not None
    assert max(abs(a - b) for a, b in zip(fixed, original, strict=True)) <= 0.011
    assert parse_box_compat(answer) is not None  # the published parse reads it as it reads LLaVA's answers
    assert FAMILY.answer_from_family("no box here", size, proc) == "no box here"


def test_grounding_target_without_a_box_is_a_user_error(tiny_qwen) -> None:
    from sefe.errors import InputError

    _, proc = tiny_qwen
    with pytest.raises(InputError, match=r"train\.json, record 4"):
        FAMILY.target_to_family("the man", (640, 480), proc, where="train.json, record 4")


# ---- LoRA, save, load, generate ------------------------------------------------------------------------


def test_lora_adapts_only_language_model_linears(tiny_qwen) -> None:
    from peft import LoraConfig, get_peft_model

    base, proc = tiny_qwen
    assert FAMILY.projector_modules(base) == ["merger"]
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=FAMILY.lora_target_regex,
        modules_to_save=FAMILY.projector_modules(base),
    )
    model = get_peft_model(_fresh(base), config)
    adapted = [name for name, module in model.named_modules() if hasattr(module, "lora_A") and module.lora_A]
    assert len(adapted) == 7 * base.config.text_config.num_hidden_layers
    assert all(".language_model." in n for n in adapted)
    assert not [n for n in adapted if ".visual." in n]
    enc = FAMILY.encode(proc, RECORDS["single"][0], noise_image(200, 100), max_length=4096)
    batch = FAMILY.collate(proc, [enc])
    model(**batch).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {n for n in grads if "lora_" in n} and {n for n in grads if ".merger." in n}
    assert not [n for n in grads if ".visual." in n and ".merger." not in n]  # the tower stays frozen
    assert not [n for n in grads if "lora_" not in n and ".merger." not in n]


def _fresh(model):
    """A copy of the tiny model (the module fixture stays untouched by PEFT)."""
    import copy

    return copy.deepcopy(model)


def test_merged_folder_loads_with_plain_transformers(tiny_qwen, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    base, proc = tiny_qwen
    model = get_peft_model(_fresh(base), LoraConfig(r=4, target_modules=FAMILY.lora_target_regex))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a non-zero update, so the merge is visible
    merged = model.merge_and_unload()
    folder = FAMILY.save(merged, proc, tmp_path / "1_Task" / "merged")
    assert (folder / "chat_template.jinja").is_file()
    assert '"Qwen2_5_VLProcessor"' in (folder / "processor_config.json").read_text()

    plain = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(plain).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(AutoImageProcessor.from_pretrained(folder)).__name__.startswith("Qwen2VLImageProcessor")
    assert len(AutoTokenizer.from_pretrained(folder)) == len(proc.tokenizer)
    batch = FAMILY.collate(proc, [FAMILY.encode(proc, RECORDS["single"][0], noise_image(200, 100), 4096)])
    merged.eval()
    with torch.no_grad():
        a, b = merged(**batch).logits, plain(**batch).logits
        c = base(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter's update is in the folder
    _, proc2 = FAMILY.load(folder)
    assert proc2.chat_template == proc.chat_template
    assert FAMILY.encode(proc2, RECORDS["multi"][0], noise_image(56, 56), 4096).input_ids == (
        FAMILY.encode(proc, RECORDS["multi"][0], noise_image(56, 56), 4096).input_ids
    )


def test_generation_inputs_left_pad_and_generate(tiny_qwen) -> None:
    model, proc = tiny_qwen
    questions = ["What is the object in the image?", "Which is a solid?\nA. milk\nB. rock"]
    batch = FAMILY.generation_inputs(proc, questions, [noise_image(200, 100), None])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask[:, -1] == 1).all() and mask[1, 0] == 0  # left padding: the shorter prompt is padded first
    header = proc.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids[:, -len(header) :].tolist() == [header, header]
    assert batch["mm_token_type_ids"].sum(dim=1).tolist() == [28, 0]
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, ids.shape[1] + 3)


def test_tiny_folder_is_cached_and_a_standard_qwen_folder(qwen_dir: Path) -> None:
    from sefe.models.family import family_for_folder

    stamp = (qwen_dir / "model.safetensors").stat().st_mtime_ns
    assert FAMILY.tiny_dir(qwen_dir.parent) == qwen_dir
    assert (qwen_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert family_for_folder(qwen_dir).name == "qwen2_5_vl"
    assert not [p for p in qwen_dir.parent.iterdir() if p.name.startswith(".")]
