"""Qwen2.5-VL as a sefe model family, on transformers 5's `Qwen2_5_VLForConditionalGeneration`.

What differs from LLaVA-1.5, and how this module handles it:

- **Template.** ChatML (`<|im_start|>role\\n...<|im_end|>\\n`, a default system turn), rendered by the
  folder's own chat template (`chat_template.jinja`, `chat_template.json` or the tokenizer's); `CHAT_TEMPLATE`
  below is ours, for the tiny model, and renders the same format. An image is a content part before the
  question's text: `<|vision_start|><|image_pad|><|vision_end|>What ...`. Labels: each assistant turn's
  answer and its `<|im_end|>` (the newline after it is template glue, as the next turn's `<|im_start|>`).
  They are found by rendering the conversation up to each answer (the generation prompt) and through it,
  then tokenising the whole rendering once with offsets: the ids are exactly the template's tokenisation.
- **Images.** Dynamic resolution: the image is resized to multiples of 28 px (patch 14 x merge 2) within
  `min_pixels..max_pixels` (`smart_resize`), so the number of image tokens, (h/14)(w/14)/4, depends on the
  image size. `<|image_pad|>` is expanded to that count per record; the collator concatenates the patch rows
  of all images (`pixel_values`, `image_grid_thw`) and marks image positions (`mm_token_type_ids`, which
  the model needs for its 3-D rotary positions).
- **Processor.** transformers' `Qwen2_5_VLProcessor` insists on a video processor, which needs torchvision
  (not a dependency of sefe). `QwenProcessor` holds the tokenizer, the image processor and the template and
  saves the same files, so a saved folder is a standard Qwen2.5-VL folder (`processor_config.json` names
  `Qwen2_5_VLProcessor`): transformers with torchvision and vLLM load it with `AutoProcessor`.
- **LoRA / projector.** The language model's linears (`model.language_model.layers.N.{self_attn,mlp}.*`);
  the vision blocks also have `mlp.gate_proj` etc. and are excluded by the `language_model` anchor. The
  projector is `model.visual.merger`. 28 layers x 7 linears = 196 LoRA modules in the 7B model.
- **Boxes.** See `coin_box_to_qwen`: CoIN's boxes are fractions of the padded square; Qwen2.5-VL answers in
  absolute pixels of the resized image.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from sefe.atomic import atomic_dir
from sefe.coin.records import IMAGE_TOKEN
from sefe.errors import InputError, MissingFile
from sefe.models.family_types import LANGUAGE_MODEL_LINEARS, Encoded, Turn

IGNORE_INDEX = -100
IMAGE_PAD = "<|image_pad|>"
VISION_TOKENS = ("<|vision_start|>", IMAGE_PAD, "<|vision_end|>", "<|video_pad|>", "<|vision_pad|>")
BUILD_FORMAT = 1


def chatml_template(
    default_system: str | None, image_part: str = "<|vision_start|><|image_pad|><|vision_end|>"
) -> str:
    """Our ChatML template for the tiny models (a real folder brings its own): a default system turn when
    `default_system` is set (Qwen2.5-VL has one, Qwen3-VL none), image parts as Qwen writes them, and the
    generation prompt `<|im_start|>assistant\n`."""
    system = (
        "{% if loop.first and message['role'] != 'system' %}"
        f"{{{{ '<|im_start|>system\n{default_system}<|im_end|>\n' }}}}"
        "{% endif %}"
        if default_system
        else ""
    )
    return (
        "{% for message in messages %}" + system + "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}{{ '" + image_part + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


CHAT_TEMPLATE = chatml_template("You are a helpful assistant.")


# ---- processor -----------------------------------------------------------------------------------------


@dataclass
class QwenProcessor:
    """Tokenizer + image processor + chat template of a Qwen2.5-VL folder (see the module docstring)."""

    tokenizer: Any
    image_processor: Any
    chat_template: str

    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(IMAGE_PAD))

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    #: the collator marks image positions in `mm_token_type_ids` (Qwen's 3-D rotary positions need them)
    mark_image_tokens = True

    def image_inputs(self, image: Any) -> tuple[dict[str, Any], int]:
        """The image's model inputs (`pixel_values` patch rows, `image_grid_thw`) and its token count."""
        out = self.image_processor(images=[image], return_tensors="pt")
        vision = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
        merge = self.image_processor.merge_size
        return vision, int(vision["image_grid_thw"][0].prod()) // (merge * merge)

    def expansion(self, count: int) -> list[int]:
        """The ids that replace the template's one image slot."""
        return [self.image_token_id] * count

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))
        (folder / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")
        config = {"processor_class": "Qwen2_5_VLProcessor"}
        (folder / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_processor(folder: str | Path) -> QwenProcessor:
    """The processor parts of a Qwen2.5-VL folder (ours or a released one)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(folder))
    return QwenProcessor(tokenizer, image_processor, chat_template_of(folder, tokenizer))


def chat_template_of(folder: Path, tokenizer: Any) -> str:
    """The folder's template: `chat_template.jinja`, `chat_template.json`, the tokenizer's, else ours."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    js = folder / "chat_template.json"
    if js.is_file():
        template = json.loads(js.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    own = getattr(tokenizer, "chat_template", None)
    return own if isinstance(own, str) and own else CHAT_TEMPLATE


# ---- images and boxes ----------------------------------------------------------------------------------


def resized_size(image_size: tuple[int, int], image_processor: Any) -> tuple[int, int]:
    """(width, height) the processor resizes an image of `image_size` (W, H) to (Qwen's `smart_resize`)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    width, height = image_size
    size = image_processor.size
    lo = size["shortest_edge"] if "shortest_edge" in size else size["min_pixels"]
    hi = size["longest_edge"] if "longest_edge" in size else size["max_pixels"]
    factor = image_processor.patch_size * image_processor.merge_size
    h, w = smart_resize(height, width, factor=factor, min_pixels=lo, max_pixels=hi)
    return w, h


def image_token_count(image_size: tuple[int, int], image_processor: Any) -> int:
    """Image tokens for an image of `image_size` (W, H): resized patches / merge_size²."""
    w, h = resized_size(image_size, image_processor)
    patch, merge = image_processor.patch_size, image_processor.merge_size
    return (h // patch) * (w // patch) // (merge * merge)


def coin_box_to_qwen(
    box: Sequence[float], image_size: tuple[int, int], resized: tuple[int, int]
) -> list[int]:
    """A CoIN box -> Qwen2.5-VL's absolute pixel box on the resized image (integers, clamped to it).

    CoIN: `[x1, y1, x2, y2]` as fractions of S = max(W, H), the image centred in an S x S square (pad
    (S-W)/2 left, (S-H)/2 top). Qwen2.5-VL: pixels of the image after `smart_resize` to (w', h').

    Worked example: a COCO image W x H = 640 x 480 is resized to 644 x 476 (multiples of 28). S = 640, the
    top pad is 80. CoIN `[0.25, 0.375, 0.75, 0.625]` is, on the square, x 160..480 and y 240..400; on the
    image, y 160..320; scaled by 644/640 and 476/480: `[161, 159, 483, 317]`. Back (`qwen_box_to_coin`):
    x 161 * 640/644 = 160.0 -> 0.25; y 159 * 480/476 = 160.3, + 80, / 640 = 0.3755 -> "0.38" at CoIN's two
    decimals; the round trip is exact up to half a resized pixel.
    """
    width, height = image_size
    w, h = resized
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    xs = [(box[0] * side - dx) * w / width, (box[2] * side - dx) * w / width]
    ys = [(box[1] * side - dy) * h / height, (box[3] * side - dy) * h / height]
    x1, x2 = (min(max(round(v), 0), w) for v in xs)
    y1, y2 = (min(max(round(v), 0), h) for v in ys)
    return [x1, y1, x2, y2]


def qwen_box_to_coin(
    box: Sequence[float], image_size: tuple[int, int], resized: tuple[int, int]
) -> list[float]:
    """Qwen2.5-VL's pixel box on the resized image -> CoIN's fractions of the padded square (unrounded)."""
    width, height = image_size
    w, h = resized
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    x1, x2 = ((v * width / w + dx) / side for v in (box[0], box[2]))
    y1, y2 = ((v * height / h + dy) / side for v in (box[1], box[3]))
    return [x1, y1, x2, y2]


_BOX = re.compile(r"\[\s*([-+]?[\d.]+)\s*,\s*([-+]?[\d.]+)\s*,\s*([-+]?[\d.]+)\s*,\s*([-+]?[\d.]+)\s*\]")


def _replace_first_box(text: str, convert) -> str | None:
    m = _BOX.search(text)
    if m is None:
        return None
    try:
        values = [float(g) for g in m.groups()]
    except ValueError:
        return None
    return text[: m.start()] + convert(values) + text[m.end() :]


def coin_box_text(box: Sequence[float]) -> str:
    """CoIN's spelling of a box: two decimals, `[x1, y1, x2, y2]`."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


# ---- the tiny model ------------------------------------------------------------------------------------


class TinyQwenConfig(BaseModel):
    """Sizes of the tiny Qwen2.5-VL: the real Qwen2.5 vocabulary (151665 ids, embeddings tied), 2 text and 2
    vision layers. Images are resized within 56x56 .. 28·28·64 pixels, so 4 to 64 image tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    mrope_section: tuple[int, int, int] = (2, 3, 3)  # sums to head_dim / 2
    max_position_embeddings: int = 4096
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 64

    def digest(self) -> str:
        return recipe_digest(self, BUILD_FORMAT, CHAT_TEMPLATE)


def qwen2_5_vl_configs(
    sizes: Any, vocab_size: int, ids: dict[str, int], mrope_section: list[int], vision_extra: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(text, vision) config dicts of a small Qwen2.5-VL from `sizes` (the tiny model's or Micro-CoIN's: the
    same field names), tied embeddings, ChatML's end and pad ids; `vision_extra` adds or overrides vision
    fields (patch size, merge size, window)."""
    text = {
        "vocab_size": vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.num_layers,
        "num_attention_heads": sizes.num_heads,
        "num_key_value_heads": sizes.num_kv_heads,
        "max_position_embeddings": sizes.max_position_embeddings,
        "rope_parameters": {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 1e6},
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": sizes.vision_layers,
        "hidden_size": sizes.vision_hidden_size,
        "intermediate_size": sizes.vision_intermediate_size,
        "num_heads": sizes.vision_heads,
        "out_hidden_size": sizes.hidden_size,
        "fullatt_block_indexes": [sizes.vision_layers - 1],
        **vision_extra,
    }
    return text, vision


def build_tiny(config: TinyQwenConfig | None = None, vocab_folder: Path | None = None):
    """(model, QwenProcessor) in memory, seeded; the tokenizer is the real one (`sefe.models.vocab`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from sefe.models.vocab import qwen2_tokenizer

    config = config or TinyQwenConfig()
    tokenizer = qwen2_tokenizer(vocab_folder)
    ids = chatml_ids(tokenizer)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    text, vision = qwen2_5_vl_configs(
        config, len(tokenizer), ids, list(config.mrope_section), {"window_size": 112}
    )
    model = seeded_qwen_model(
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, text, vision, ids, config.seed
    )
    return model, QwenProcessor(tokenizer, image_processor, CHAT_TEMPLATE)


def seeded_qwen_model(
    config_cls: Any,
    model_cls: Any,
    text: dict[str, Any],
    vision: dict[str, Any],
    ids: dict[str, int],
    seed: int,
) -> Any:
    """A Qwen-VL model (2.5 or 3) from its text and vision settings, seeded, with the ChatML special tokens
    wired in and greedy decoding that stops at `<|im_end|>`: the part the tiny builders share."""
    import torch
    from transformers import GenerationConfig

    model_config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = model_cls(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    return model


def tiny_dir(cache_dir: Path | None = None, config: TinyQwenConfig | None = None) -> Path:
    """The tiny Qwen2.5-VL folder, built once per config under `$SEFE_CACHE` (atomic publish)."""
    config = config or TinyQwenConfig()
    return cached_tiny(cache_dir, f"tiny-qwen2_5_vl-{config.digest()}", config, lambda: build_tiny(config))


def recipe_digest(config: BaseModel, build_format: int, template: str) -> str:
    """The cache key of a tiny model: its build format, chat template and config (12 hex digits)."""
    recipe = {"format": build_format, "template": template, **config.model_dump()}
    return hashlib.sha256(orjson.dumps(recipe, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def chatml_ids(tokenizer: Any) -> dict[str, int]:
    """The ids of the vision tokens and ChatML's end tokens in the real Qwen2 vocabulary."""
    return {
        t: int(tokenizer.convert_tokens_to_ids(t)) for t in (*VISION_TOKENS, "<|im_end|>", "<|endoftext|>")
    }


def cached_tiny(cache_dir: Path | None, name: str, config: BaseModel, build: Any) -> Path:
    """`<cache>/<name>`, built with `build()` -> (model, processor) unless present; published atomically."""
    from sefe.models.tiny import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / name
    if (target / "config.json").is_file() and (target / "processor_config.json").is_file():
        return target
    model, processor = build()
    with atomic_dir(target) as tmp:
        save_parts(model, processor, tmp)
        (tmp / "sefe_tiny.json").write_bytes(orjson.dumps(config.model_dump(), option=orjson.OPT_INDENT_2))
    return target


# ---- load / save ---------------------------------------------------------------------------------------


def load(
    path: str | Path,
    dtype: Any = "float32",
    attn_implementation: str = "sdpa",
    model_class: str = "Qwen2_5_VLForConditionalGeneration",
):
    """(model, QwenProcessor) from a Qwen-VL folder; `model_class` names the transformers class."""
    return load_model(path, dtype, attn_implementation, model_class), load_processor(path)


def load_model(path: str | Path, dtype: Any, attn_implementation: str, model_class: str) -> Any:
    """The transformers class `model_class` from an HF folder, in `dtype`."""
    import transformers

    from sefe.models.llava import torch_dtype

    path = Path(path)
    if not (path / "config.json").is_file():
        raise MissingFile(f"{path} has no config.json (expected an HF {model_class} folder)")
    return getattr(transformers, model_class).from_pretrained(
        str(path), dtype=torch_dtype(dtype), attn_implementation=attn_implementation
    )


def save_parts(model: Any, processor: QwenProcessor, folder: Path) -> None:
    model.save_pretrained(str(folder))
    processor.save_pretrained(folder)


def save(model: Any, processor: QwenProcessor, folder: str | Path) -> Path:
    """Model + processor into `folder` atomically (an existing folder is swapped for the new one)."""
    folder = Path(folder)
    with atomic_dir(folder, replace=True) as tmp:
        save_parts(model, processor, tmp)
    return folder


# ---- records -> ids and labels -------------------------------------------------------------------------


def messages(turns: Sequence[Turn], has_image: bool, where: str = "record") -> list[dict[str, Any]]:
    """Chat messages of a CoIN conversation: the image (if any) as the first part of the turn that carries
    `<image>` (the first turn when none does), the `<image>` text itself removed."""
    from sefe.models.conversation import move_image_to_front

    moved = move_image_to_front(turns, has_image, where=where)
    out: list[dict[str, Any]] = []
    for question, answer in moved:
        parts: list[dict[str, Any]] = []
        if has_image and question.startswith(IMAGE_TOKEN):
            parts.append({"type": "image"})
            question = question[len(IMAGE_TOKEN) :].lstrip("\n")
        parts.append({"type": "text", "text": question})
        out.append({"role": "user", "content": parts})
        if answer is not None:
            out.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return out


def render(processor: QwenProcessor, msgs: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    text = processor.tokenizer.apply_chat_template(
        msgs,
        chat_template=processor.chat_template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return str(text)


def answer_spans(processor: QwenProcessor, msgs: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and the character span of every assistant answer plus its end-of-turn marker."""
    full = render(processor, msgs, add_generation_prompt=False)
    spans = []
    for k, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        before = render(processor, msgs[:k], add_generation_prompt=True)
        through = render(processor, msgs[: k + 1], add_generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise ValueError("the chat template does not render a conversation as the sum of its turns")
        spans.append((len(before), len(before) + len(through[len(before) :].rstrip())))
    return full, spans


def tokenize(
    processor: QwenProcessor, turns: Sequence[Turn], has_image: bool, where: str = "record"
) -> tuple[list[int], list[int]]:
    """Ids (one `<|image_pad|>` per image, not yet expanded) and labels of one record."""
    msgs = messages(turns, has_image, where)
    text, spans = answer_spans(processor, msgs)
    enc = processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    labels = [
        tid
        if end > start and any(start < s_end and end > s_start for s_start, s_end in spans)
        else IGNORE_INDEX
        for tid, (start, end) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    found = ids.count(processor.image_token_id)
    if found != int(has_image):
        raise InputError(f"{where}: {found} image slots in the rendered text for {int(has_image)} image(s)")
    return ids, labels


def encode(
    processor: QwenProcessor, turns: Sequence[Turn], image: Any | None, max_length: int, where: str = "record"
) -> Encoded:
    """One record: template tokens, the image slot expanded for this image (`processor.expansion`), cut to
    `max_length` (never through the image)."""
    from sefe.models.tokenization import IMAGE_PLACEHOLDER, truncate_expanded

    ids, labels = tokenize(processor, turns, image is not None, where)
    if image is None:
        return Encoded(ids[:max_length], labels[:max_length])
    vision, count = processor.image_inputs(image)
    span = processor.expansion(count)
    slot = processor.image_token_id
    ids = [IMAGE_PLACEHOLDER if i == slot else i for i in ids]
    ids, labels = truncate_expanded(ids, labels, len(span), max_length, where)
    return Encoded(*expand_slot(ids, labels, IMAGE_PLACEHOLDER, span), vision)


def expand_slot(ids: list[int], labels: list[int], slot: int, span: list[int]) -> tuple[list[int], list[int]]:
    """Every `slot` id replaced by the ids of `span` (labels ignored there)."""
    out_ids: list[int] = []
    out_labels: list[int] = []
    for i, lab in zip(ids, labels, strict=True):
        if i == slot:
            out_ids.extend(span)
            out_labels.extend([IGNORE_INDEX] * len(span))
        else:
            out_ids.append(i)
            out_labels.append(lab)
    return out_ids, out_labels


def collate(processor: QwenProcessor, items: Sequence[Encoded], left_pad: bool = False) -> dict[str, Any]:
    """Pad to the longest record; images' inputs concatenated in order; `mm_token_type_ids` 1 on image
    tokens when the processor asks for it."""
    import torch

    longest = max(len(e.input_ids) for e in items)
    n = len(items)
    input_ids = torch.full((n, longest), processor.pad_token_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, longest), dtype=torch.long)
    for row, e in enumerate(items):
        k = len(e.input_ids)
        cols = slice(longest - k, longest) if left_pad else slice(0, k)
        input_ids[row, cols] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, cols] = torch.tensor(e.labels, dtype=torch.long)
        attention[row, cols] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
    if processor.mark_image_tokens:
        batch["mm_token_type_ids"] = (input_ids == processor.image_token_id).int() * attention.int()
    with_images = [e.vision for e in items if e.vision]
    for key in with_images[0] if with_images else ():
        batch[key] = torch.cat([v[key] for v in with_images])  # image order = batch order
    return batch


def prompt_text(processor: QwenProcessor, question: str, has_image: bool) -> str:
    """One question's generation prompt as the folder's template renders it, the image as its one slot
    (`<|vision_start|><|image_pad|><|vision_end|>`): the text vLLM and transformers' processor expand."""
    return render(processor, messages([(question, None)], has_image), add_generation_prompt=True)


def generation_inputs(
    processor: QwenProcessor, questions: Sequence[str], images: Sequence[Any | None]
) -> dict:
    """Left-padded prompts (`prompt_text`, tokenised), each with its image slot expanded for its image."""
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} image slots (None for text-only)")
    items = []
    for question, image in zip(questions, images, strict=True):
        text = prompt_text(processor, question, image is not None)
        ids = [int(i) for i in processor.tokenizer(text, add_special_tokens=False)["input_ids"]]
        vision: dict[str, Any] = {}
        labels = [IGNORE_INDEX] * len(ids)
        if image is not None:
            vision, count = processor.image_inputs(image)
            ids, labels = expand_slot(ids, labels, processor.image_token_id, processor.expansion(count))
        items.append(Encoded(ids, labels, vision))
    batch = collate(processor, items, left_pad=True)
    batch.pop("labels")
    return batch


# ---- the family ----------------------------------------------------------------------------------------


class Qwen2_5_VLFamily:
    """Qwen2.5-VL through the `ModelFamily` contract (see the module docstring)."""

    name = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"
    lora_target_regex = LANGUAGE_MODEL_LINEARS

    def projector_modules(self, model: Any) -> list[str]:
        return ["merger"]

    def load(self, path: str | Path, dtype: Any = "float32", attn_implementation: str = "sdpa") -> tuple:
        return load(path, dtype, attn_implementation, self.model_class)

    def load_processor(self, path: str | Path) -> Any:
        return load_processor(path)

    def save(self, model: Any, processor: Any, folder: str | Path) -> Path:
        return save(model, processor, folder)

    def tiny_dir(self, cache_dir: Path | None = None) -> Path:
        return tiny_dir(cache_dir)

    def encode(
        self, processor: Any, turns: Sequence[Turn], image: Any | None, max_length: int, where: str = "record"
    ) -> Encoded:
        return encode(processor, turns, image, max_length, where)

    def collate(self, processor: Any, items: Sequence[Encoded]) -> dict[str, Any]:
        return collate(processor, items)

    def prompt_text(self, processor: Any, question: str, has_image: bool) -> str:
        return prompt_text(processor, question, has_image)

    def generation_inputs(
        self, processor: Any, questions: Sequence[str], images: Sequence[Any | None]
    ) -> dict:
        return generation_inputs(processor, questions, images)

    def box_to_family(self, box: Sequence[float], image_size: tuple[int, int], processor: Any) -> list[float]:
        resized = resized_size(image_size, processor.image_processor)
        return [float(v) for v in coin_box_to_qwen(box, image_size, resized)]

    def box_from_family(
        self, box: Sequence[float], image_size: tuple[int, int], processor: Any
    ) -> list[float]:
        return qwen_box_to_coin(box, image_size, resized_size(image_size, processor.image_processor))

    def target_to_family(
        self, text: str, image_size: tuple[int, int], processor: Any, where: str = "record"
    ) -> str:
        """A Grounding answer: its first box in Qwen's pixels (`[161, 159, 483, 317]`), the rest kept."""
        out = _replace_first_box(
            text,
            lambda b: (
                "[" + ", ".join(str(int(v)) for v in self.box_to_family(b, image_size, processor)) + "]"
            ),
        )
        if out is None:
            raise InputError(f"{where}: Grounding answer {text!r} has no [x1, y1, x2, y2] box")
        return out

    def answer_from_family(self, text: str, image_size: tuple[int, int], processor: Any) -> str:
        """A model's Grounding answer with its first box in CoIN's spelling; unchanged when it has none."""
        out = _replace_first_box(
            text, lambda b: coin_box_text(self.box_from_family(b, image_size, processor))
        )
        return text if out is None else out


FAMILY = Qwen2_5_VLFamily()
