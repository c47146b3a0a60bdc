"""Keep the added `<image>` entry out of what the language model learns and says.

The release's LLaMA vocabulary has 32000 entries and no `<image>` token (its placeholder is the id -200,
replaced before the embedding). transformers' LlavaForConditionalGeneration needs a real id instead, so sefe
appends `<image>` after the base vocabulary (id 32000: no other id moves) and its input-embedding row is
never read (the image features are scattered over those positions). Its output row, though, would add one
class to every softmax: the loss would differ from the release's and the model could emit `<image>`.
`mask_untrained_logits` hooks the output layer so the logits of the image token and of every row past the
base vocabulary are the dtype's minimum: the softmax, the loss and its gradients are those of the 32000
real pieces, and greedy or sampled generation can never choose them.
"""

from __future__ import annotations

from typing import Any

import torch

_HOOK_ATTR = "_sefe_untrained_ids"


def untrained_ids(model: Any, tokenizer: Any) -> list[int]:
    """The image token id and every output row beyond the tokenizer's base vocabulary (added tokens such as
    `<image>` and `<pad>`), except the tokenizer's BOS/EOS/UNK, which the model must keep."""
    rows = int(model.get_output_embeddings().weight.shape[0])
    ids = set(range(min(int(tokenizer.vocab_size), rows), rows))
    image_id = getattr(model.config, "image_token_id", None)
    if image_id is not None and 0 <= int(image_id) < rows:
        ids.add(int(image_id))
    keep = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}
    return sorted(i for i in ids if i not in keep)


def _mask_hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    ids = getattr(module, _HOOK_ATTR)
    if not ids or not isinstance(output, torch.Tensor):
        return output
    index = torch.tensor(ids, device=output.device)
    return output.index_fill(-1, index, torch.finfo(output.dtype).min)


def mask_untrained_logits(model: Any, tokenizer: Any) -> list[int]:
    """Install (once) the output-layer hook; returns the masked ids. Survives PEFT wrapping and merging,
    which keep the output layer module."""
    head = model.get_output_embeddings()
    ids = untrained_ids(model, tokenizer)
    already = hasattr(head, _HOOK_ATTR)
    setattr(head, _HOOK_ATTR, ids)
    if not already:
        head.register_forward_hook(_mask_hook)
    return ids
