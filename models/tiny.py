"""The embedded tiny LLaVA: a real LlavaForConditionalGeneration small enough to train on a laptop CPU.

Built from configs (tiny CLIP vision tower + tiny Llama) with a BPE tokenizer trained locally on a built-in
corpus, so `sefe train` and the tests need no downloads. The build is seeded and deterministic, cached on disk
under `$SEFE_CACHE` (or `~/.cache/sefe/`) keyed by a hash of its config, and written atomically (temp folder +
rename) so concurrent or killed builds never leave a half folder behind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

from sefe.atomic import atomic_dir
from sefe.coin.instructions import MCQ_LETTER, SHORT_ANSWER
from sefe.coin.records import IMAGE_TOKEN
from sefe.models.conversation import ASSISTANT, EOS, SYSTEM, USER

BUILD_FORMAT = 1  # bump when the build recipe changes in a way the config hash does not capture
SPECIAL_TOKENS = ["<unk>", "<s>", EOS, "<pad>", IMAGE_TOKEN]


class TinyLlavaConfig(BaseModel):
    """Sizes of the tiny model. Image 32 px, patch 8: 16 patches + CLS, 16 image tokens with 'default'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    vocab_size: int = 1024  # target for the BPE trainer; the real size is what the corpus supports
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 4096
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 32
    patch_size: int = 8
    extra_corpus: tuple[str, ...] = ()  # more tokenizer-training lines (a benchmark's own vocabulary)
    # one token per digit: every number of a given width has the same token count (Micro-CoIN's boxes)
    split_digits: bool = False

    def digest(self) -> str:
        skip = {
            k for k in ("extra_corpus", "split_digits") if not getattr(self, k)
        } or None  # defaults as before
        recipe = {"format": BUILD_FORMAT, "corpus": CORPUS_LINES, **self.model_dump(exclude=skip)}
        payload = orjson.dumps(recipe, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(payload).hexdigest()[:12]


# Our own small corpus: template words, CoIN-style instruction lines and everyday question vocabulary, so the
# tokenizer splits typical prompts into sensible pieces. Printable ASCII and newline are always in the
# alphabet. No special tokens in it: BPE would learn them as ordinary pieces (a literal "<image>\nWhat").
CORPUS_LINES = [
    SYSTEM,
    f"{USER}: What is in the picture? {ASSISTANT}: A dog on a red sofa.",
    SHORT_ANSWER,
    MCQ_LETTER,
    "Answer with Yes or No. Answer yes or no. Is the answer correct? Yes No yes no",
    "Explain your answer briefly. Explain your answer in detail. Give a short explanation.",
    "Describe the region in the box. Please provide the bounding box coordinate of the region this sentence"
    " describes: the man on the left.",
    "Context: The passage below describes an experiment with magnets and plants in a garden.",
    "Options: A. north B. south C. east D. west E. none of the above",
    "A. B. C. D. E. The answer is A. The answer is B. The answer is C. The answer is D.",
    "Reference OCR token: STOP, 25, cafe, open, exit, sale, street, book, title, author",
    "What is the title of this book? Who wrote this book? What is the genre of this book?",
    "Is this a comedy book? Is this book related to history? Is this a cookbook? Unanswerable",
    "What is the object in the image? What color is the car? How many people are there?",
    "What is the man holding? Where is the cat sitting? Which side of the table is the cup on?",
    "Is the sky blue or gray? Are there any animals? What is written on the sign? What time is it?",
    "white black red green blue yellow brown orange pink purple gray silver gold",
    "person man woman child boy girl dog cat horse bird car bus truck train plane boat bicycle",
    "table chair sofa bed cup bottle plate knife fork phone laptop television clock book sign tree",
    "zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 10 100",
    "[0.12, 0.34, 0.56, 0.78] [0.05, 0.10, 0.95, 0.90] [0.25, 0.50, 0.75, 1.00]",
    "left right top bottom middle front back near far above below inside outside next to behind",
    "The image shows a street with cars and people walking. The photo was taken during the day.",
    "Because the leaves are green, the plant can make food from sunlight, water and air.",
    "The weather is sunny, so the people are wearing hats and sunglasses at the beach.",
    "espresso maker golden retriever tabby cat sports car school bus mountain bike",
    "science biology physics chemistry geography history language map state capital",
    "which of these is a solid? which word would you find on a dictionary page?",
    "It is not possible to answer the question from the image. unanswerable unsuitable",
    "the a an of in on at to for with from by and or but not is are was were be been this that",
]


def _corpus(extra: tuple[str, ...] = ()) -> list[str]:
    lines = CORPUS_LINES + list(extra)
    return lines * 4 + [line.lower() for line in lines]


def default_cache_dir() -> Path:
    env = os.environ.get("SEFE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sefe"


def build_tokenizer(config: TinyLlavaConfig):
    """A Llama-like BPE tokenizer (Metaspace pre-tokenizer, `<s>` first) trained on the built-in corpus."""
    return train_bpe(
        config.vocab_size, config.extra_corpus, config.split_digits, config.max_position_embeddings
    )


def train_bpe(
    vocab_size: int,
    extra_corpus: tuple[str, ...],
    split_digits: bool,
    model_max_length: int,
    added_special: tuple[str, ...] = (),
    word_after_newline: bool = False,
):
    """The BPE of `build_tokenizer`; `added_special` tokens are appended after the trained pieces (ids from
    the trained size up), so the ordinary pieces and their ids are those of the tokenizer without them.
    `word_after_newline`: a word that follows a newline is tokenised as one after a space (`▁Red`, not
    `Re` `d`): ChatML starts every message on a new line, where the vicuna template has a space."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    meta = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    digits = pre_tokenizers.Digits(individual_digits=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([meta, digits]) if split_digits else meta
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(extra_corpus), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    if word_after_newline:
        tok.normalizer = normalizers.Replace(Regex("\n(?=[^\n])"), "\n ")  # not before a special token
    if added_special:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added_special])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token=EOS,
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=model_max_length,
    )


def build_tiny_llava(config: TinyLlavaConfig | None = None):
    """Construct (model, processor) in memory, deterministically from `config.seed`."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    config = config or TinyLlavaConfig()
    tokenizer = build_tokenizer(config)
    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
        do_pad=True,
    )
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden_size,
        intermediate_size=config.vision_intermediate_size,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        projection_dim=config.vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    n_image_tokens = (config.image_size // config.patch_size) ** 2
    llava_config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_image_tokens,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(config.seed)
    model = LlavaForConditionalGeneration(llava_config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def tiny_llava_dir(cache_dir: Path | None = None, config: TinyLlavaConfig | None = None) -> Path:
    """The folder of the tiny LLaVA (model + processor + tokenizer), built once and cached by config hash."""
    config = config or TinyLlavaConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-llava-{config.digest()}"
    if (target / "config.json").is_file() and (target / "processor_config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_llava(config)
    with atomic_dir(target) as tmp:  # a concurrent build that published first wins; ours is dropped
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "sefe_tiny.json").write_bytes(orjson.dumps(config.model_dump(), option=orjson.OPT_INDENT_2))
    return target
