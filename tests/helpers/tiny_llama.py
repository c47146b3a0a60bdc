"""A tiny Llama model folder built locally for the vLLM tier: random weights, a BPE tokenizer trained here.

It writes nonsense, but vLLM's structured outputs still force every answer into the request's JSON schema,
which is all the tier checks (the wiring: server, offline engine, chunks, the build's files). No download.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "What colour is the bus? Which animal is on the sofa? What is written on the sign?",
    'Reply with JSON only: {"items": [{"distractors": ["red", "blue", "green"]}]}',
    '{"explanation": "The answer is yes because the picture shows a dog on a red sofa."}',
    "Give three wrong but plausible answers. Explain the answer briefly, in about twenty words.",
]


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """Write config, random weights and tokenizer to `folder` (idempotent: reuses a finished folder)."""
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: any JSON can be spelt
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 8, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # vLLM CPU attention kernels support 32, 64, 80, 96, 112, 128, ... (not 16)
        max_position_embeddings=2048,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder
