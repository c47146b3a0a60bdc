"""LLaVA-1.5 assembly on transformers' native LlavaForConditionalGeneration.

Three sources: (a) an HF LLaVA checkpoint folder (also our own merged stages); (b) the three parts LLaVA-1.5
fine-tuning starts from: a Vicuna/Llama folder, a CLIP vision folder and LLaVA's pretrain
`mm_projector.bin`; (c) the embedded tiny model. Every path ends with the same processor settings: CLIP
feature layer -2, 'default' strategy (CLS dropped, `num_additional_image_tokens=1`), images padded to a
square with the mean colour. No modeling code lives here: we only configure and load transformers classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from sefe.atomic import atomic_dir
from sefe.coin.records import IMAGE_TOKEN
from sefe.errors import MissingFile, reading

PROJECTOR_KEYS = {
    "model.mm_projector.0.weight": "linear_1.weight",
    "model.mm_projector.0.bias": "linear_1.bias",
    "model.mm_projector.2.weight": "linear_2.weight",
    "model.mm_projector.2.bias": "linear_2.bias",
}


class ModelSource(BaseModel):
    """Where the model comes from: exactly one of `hf`, the triple `llm`+`vision`+`projector`, or `tiny`.

    With nothing set it is the embedded tiny model (the default of `sefe train`).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    hf: str | None = Field(default=None, validation_alias=AliasChoices("hf", "path"))  # `path` accepted too
    llm: str | None = None
    vision: str | None = None
    projector: str | None = None
    tiny: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        parts = [self.llm, self.vision, self.projector]
        has_parts = any(p is not None for p in parts)
        if has_parts and not all(p is not None for p in parts):
            raise ValueError("model source: llm, vision and projector must be given together")
        chosen = sum([self.hf is not None, has_parts, self.tiny])
        if chosen > 1:
            raise ValueError("model source: give exactly one of hf, (llm + vision + projector), or tiny")
        if chosen == 0:
            self.tiny = True
        return self

    @property
    def kind(self) -> Literal["hf", "parts", "tiny"]:
        if self.tiny:
            return "tiny"
        return "hf" if self.hf is not None else "parts"


def torch_dtype(dtype: Any):
    """A torch dtype from a name (float32/bfloat16/float16, or fp32/bf16/fp16) or a torch dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    names.update({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16})
    try:
        return names[dtype]
    except KeyError:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}") from None


def _padding_image_processor(image_processor: Any, image_size: int | None = None):
    """A PIL LLaVA image processor with the given processor's sizes and statistics, padding to a square."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    if image_processor is None:
        side = image_size or 336
        return LlavaImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_mean=list(OPENAI_CLIP_MEAN),
            image_std=list(OPENAI_CLIP_STD),
            do_pad=True,
        )
    if isinstance(image_processor, LlavaImageProcessorPil) and image_processor.do_pad:
        return image_processor
    keep = ("size", "crop_size", "image_mean", "image_std", "resample", "rescale_factor", "do_center_crop")
    kwargs = {k: getattr(image_processor, k) for k in keep if getattr(image_processor, k, None) is not None}
    for k in ("size", "crop_size"):
        if k in kwargs and not isinstance(kwargs[k], dict):
            kwargs[k] = {key: v for key, v in dict(kwargs[k]).items() if v is not None}
    return LlavaImageProcessorPil(**kwargs, do_pad=True)


def _llava_processor(image_processor: Any, tokenizer: Any, config: Any):
    from transformers import LlavaProcessor

    if tokenizer.pad_token is None:  # LLaVA v1 pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token
    return LlavaProcessor(
        image_processor=_padding_image_processor(image_processor, config.vision_config.image_size),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    )


def _fix_processor(processor: Any, config: Any):
    """Make a loaded processor follow LLaVA-1.5 (older llava-hf folders lack patch size / padding)."""
    ok = (
        processor.patch_size == config.vision_config.patch_size
        and processor.num_additional_image_tokens == 1
        and processor.vision_feature_select_strategy == config.vision_feature_select_strategy
        and getattr(processor.image_processor, "do_pad", False)
    )
    return processor if ok else _llava_processor(processor.image_processor, processor.tokenizer, config)


def _load_hf(folder: str, dtype: Any, attn_implementation: str):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise MissingFile(f"model source hf: {path} has no config.json (expected an HF LLaVA folder)")
    from safetensors import SafetensorError

    with reading(path, "model", (OSError, ValueError, SafetensorError)):
        model = LlavaForConditionalGeneration.from_pretrained(
            path, dtype=torch_dtype(dtype), attn_implementation=attn_implementation
        )
        processor = AutoProcessor.from_pretrained(path)
    return model, _fix_processor(processor, model.config)


def load_llava_processor(folder: str | Path) -> Any:
    """The LlavaProcessor of an HF LLaVA folder without its weights (made to follow LLaVA-1.5, as loaded)."""
    from transformers import AutoConfig, AutoProcessor

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise MissingFile(f"model source hf: {path} has no config.json (expected an HF LLaVA folder)")
    with reading(path, "processor", (OSError, ValueError)):
        return _fix_processor(AutoProcessor.from_pretrained(path), AutoConfig.from_pretrained(path))


def load_projector(path: str | Path) -> dict[str, Any]:
    """LLaVA's pretrain `mm_projector.bin` as `linear_1/2` state dict keys (a clear error on other files)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"projector file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    found = {k.split("mm_projector.", 1)[-1]: v for k, v in raw.items() if "mm_projector." in k}
    short = {k.split("mm_projector.", 1)[-1]: v for k, v in PROJECTOR_KEYS.items()}
    missing = [k for k in short if k not in found]
    if missing:
        raise ValueError(
            f"{path}: not a LLaVA mm_projector file (missing {['model.mm_projector.' + m for m in missing]}; "
            f"found keys {sorted(raw)[:8]})"
        )
    return {short[k]: found[k] for k in short}


def assemble_llava(
    llm: str | Path,
    vision: str | Path,
    projector: str | Path,
    dtype: Any = "float32",
    attn_implementation: str = "sdpa",
):
    """Build LLaVA-1.5 from a Vicuna/Llama folder, a CLIP (vision) folder and `mm_projector.bin`.

    Submodules are loaded once and placed into a LlavaForConditionalGeneration built on the meta device, so a
    7B model is never held twice. `<image>` is added to the tokenizer and the embeddings grow by one row.
    """
    import torch
    from transformers import (
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPVisionModel,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    td = torch_dtype(dtype)
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=td, attn_implementation=attn_implementation)
    tower = CLIPVisionModel.from_pretrained(vision, dtype=td, attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    try:
        image_processor = AutoImageProcessor.from_pretrained(vision)
    except (OSError, ValueError):
        image_processor = None
    vision_cfg = tower.config
    patches = (vision_cfg.image_size // vision_cfg.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_cfg,
        text_config=lm.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    proj = LlavaMultiModalProjector(config)
    weights = load_projector(projector)
    try:
        proj.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{projector}: projector shapes do not fit the vision/LLM sizes: {exc}") from None
    model.model.multi_modal_projector = proj.to(td)
    model.config.text_config = model.model.language_model.config
    model.config.vision_config = model.model.vision_tower.config
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    meta = [n for n, p in model.named_parameters() if p.is_meta] + [
        n for n, b in model.named_buffers() if b.is_meta
    ]
    if meta:
        raise RuntimeError(f"assembly left parameters unloaded: {meta[:5]}")
    model.set_attn_implementation(attn_implementation)
    processor = _llava_processor(image_processor, tokenizer, model.config)
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    return model, processor


def load_llava(
    source: ModelSource | str | Path | None = None,
    dtype: Any = "float32",
    attn_implementation: str = "sdpa",
    device: str | None = None,
):
    """(LlavaForConditionalGeneration, LlavaProcessor) from a source; a str/Path is an HF folder."""
    if source is None:
        source = ModelSource(tiny=True)
    elif isinstance(source, str | Path):
        source = ModelSource(hf=str(source))
    if source.kind == "tiny":
        from sefe.models.tiny import tiny_llava_dir

        model, processor = _load_hf(str(tiny_llava_dir()), dtype, attn_implementation)
    elif source.kind == "hf":
        model, processor = _load_hf(str(source.hf), dtype, attn_implementation)
    else:
        model, processor = assemble_llava(
            str(source.llm), str(source.vision), str(source.projector), dtype, attn_implementation
        )
    from sefe.models.image_token import mask_untrained_logits

    mask_untrained_logits(model, processor.tokenizer)  # `<image>` never in the softmax, loss or output
    if device is not None:
        model = model.to(device)
    return model, processor


def save_llava(model: Any, processor: Any, folder: str | Path) -> Path:
    """`save_pretrained` model + processor into `folder` atomically (temp folder beside it, then rename)."""
    folder = Path(folder)
    with atomic_dir(folder, replace=True) as tmp:  # an existing folder is swapped for the complete new one
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        from sefe.models.tokenization import save_tokenizer_files

        save_tokenizer_files(processor.tokenizer, tmp)  # the SentencePiece model and `legacy` survive a merge
    return folder
