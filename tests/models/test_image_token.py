"""The added `<image>` entry has no effect on what the language model learns or says.

Its input row is never read (features replace it), its output row is masked out of the softmax: the loss
is the release's (a 32000-piece softmax) and generation cannot pick it. Each check also shows that without
the mask the same perturbation does change the loss / the output, so the tests can fail.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sefe.models.image_token import _HOOK_ATTR, mask_untrained_logits, untrained_ids


@pytest.fixture
def fresh_tiny(tiny_dir: Path):
    """A private copy of the tiny LLaVA (its weights are perturbed here)."""
    from sefe.models.llava import load_llava

    model, processor = load_llava(tiny_dir)
    model.eval()
    return model, processor


def _batch(processor, data_root: Path):
    from sefe.models.dataset import DataCollator, LlavaDataset

    ds = LlavaDataset(data_root / "annotations" / "GQA" / "train.json", data_root, processor)
    return DataCollator(processor)([ds[i] for i in range(len(ds))])


def _loss(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).loss


def test_image_token_rows_do_not_change_the_loss(fresh_tiny, data_root: Path) -> None:
    model, processor = fresh_tiny
    image_id = model.config.image_token_id
    assert image_id in getattr(model.get_output_embeddings(), _HOOK_ATTR)  # load_llava installed the mask
    assert processor.tokenizer.eos_token_id not in untrained_ids(model, processor.tokenizer)
    batch = _batch(processor, data_root)
    assert int((batch["input_ids"] == image_id).sum()) > 0
    before = _loss(model, batch)
    with torch.no_grad():
        model.get_input_embeddings().weight[image_id].normal_(0, 50.0)
        model.get_output_embeddings().weight[image_id].normal_(0, 50.0)
    after = _loss(model, batch)
    assert torch.equal(before, after)
    # the same output-row change without the mask does change the loss
    setattr(model.get_output_embeddings(), _HOOK_ATTR, [])
    assert not torch.allclose(_loss(model, batch), before)


def test_image_token_is_never_generated(fresh_tiny) -> None:
    model, processor = fresh_tiny
    image_id = model.config.image_token_id
    tok = processor.tokenizer
    inputs = tok("A chat USER: What is it? ASSISTANT:", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1][0, -1]
        # make `<image>` the overwhelming favourite of the raw logits
        model.get_output_embeddings().weight[image_id] = hidden / hidden.norm() * 1e4
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": tok.pad_token_id}
    out = model.generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1] :]
    assert image_id not in out.tolist()
    setattr(model.get_output_embeddings(), _HOOK_ATTR, [])
    unmasked = model.generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1] :]
    assert unmasked[0].item() == image_id  # what the mask prevents


def test_appended_image_row_keeps_the_32000_piece_loss() -> None:
    """A LLaMA-sized vocabulary grown by one `<image>` row: the loss equals the 32000-row model's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(3, 32000, (2, 24))
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        base = model(input_ids=ids, labels=labels).loss
    model.resize_token_embeddings(32001)  # `<image>` appended: ids 0..31999 unchanged
    with torch.no_grad():
        model.get_output_embeddings().weight[32000] = 5.0  # a row that would take a share of the softmax
    tokenizer = SimpleNamespace(vocab_size=32000, eos_token_id=2, bos_token_id=1, unk_token_id=0)
    with torch.no_grad():
        grown = model(input_ids=ids, labels=labels).loss
    assert not torch.allclose(grown, base, atol=1e-3)
    assert mask_untrained_logits(model, tokenizer) == [32000]
    assert mask_untrained_logits(model, tokenizer) == [32000]  # idempotent: one hook
    assert len(model.get_output_embeddings()._forward_hooks) == 1
    with torch.no_grad():
        masked = model(input_ids=ids, labels=labels).loss
    assert torch.allclose(masked, base, rtol=0, atol=1e-5)
