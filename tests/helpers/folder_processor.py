"""The transformers processor a saved model folder declares, loaded as vLLM and plain transformers load it.

`AutoProcessor` needs torchvision for the Qwen-VL and InternVL video processors, which this environment
lacks (sefe does not depend on it; vLLM brings it). Without torchvision, the class named in
`processor_config.json` is built from the folder's own tokenizer, image processor, chat template and
processor settings, minus the video processor: the same `__call__` and chat template, for images.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

#: The families other than LLaVA, whose saved folders vLLM serves natively (the `family_folder` fixture of
#: tests/models builds each).
FOLDER_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "internvl")


def folder_processor(folder: Path) -> Any:
    """`AutoProcessor.from_pretrained(folder)`, or (no torchvision) its class without the video part."""
    import transformers

    if importlib.util.find_spec("torchvision") is not None:
        return transformers.AutoProcessor.from_pretrained(folder)
    settings = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    declared = getattr(transformers, settings.pop("processor_class"))

    class WithoutVideo(declared):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(cls) -> list[str]:
            return [a for a in super().get_attributes() if a != "video_processor"]

    return WithoutVideo(
        image_processor=transformers.AutoImageProcessor.from_pretrained(folder),
        tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
        chat_template=(folder / "chat_template.jinja").read_text(encoding="utf-8"),
        **settings,
    )
