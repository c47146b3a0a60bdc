"""vicuna_v1 prompts and label masking, checked by decoding what carries loss."""

from __future__ import annotations

import pytest

from sefe.coin.instructions import MCQ_LETTER as SCIENCEQA_INSTRUCTION
from sefe.coin.tasks import TaskSpec, get_task
from sefe.models.conversation import (
    IGNORE_INDEX,
    SYSTEM,
    build_prompt,
    eval_question,
    generation_prompt,
    move_image_to_front,
    turns_from_conversations,
)
from sefe.models.tokenization import (
    IMAGE_PLACEHOLDER,
    chunk_tokenizer,
    expand_image,
    preprocess_record,
    truncate_expanded,
)


def tokenize_conversation(turns, tok, image_token_count: int, max_length: int | None = None):
    """The dataset's path for one record: move `<image>`, chunk, label, cut to fit, expand the placeholder."""
    has_image = image_token_count > 0
    turns = move_image_to_front(turns, has_image)
    limit = max_length or 10**6
    pre = preprocess_record(turns, tok, chunk_tokenizer(tok), has_image, max_length=limit)
    assert pre.mismatch is None
    ids, labels = pre.input_ids, pre.labels
    if has_image:
        assert ids.count(IMAGE_PLACEHOLDER) == 1
        ids, labels = truncate_expanded(ids, labels, image_token_count, limit)
        ids, labels = expand_image(ids, labels, tok.convert_tokens_to_ids("<image>"), image_token_count)
    return ids, labels


@pytest.fixture(scope="module")
def tokenizer():
    from sefe.models.tiny import TinyLlavaConfig, build_tokenizer

    return build_tokenizer(TinyLlavaConfig())


@pytest.fixture(scope="module")
def byte_level_tokenizer():
    """A differently built tokenizer (GPT-2 style byte-level BPE, offsets trimmed differently)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([SYSTEM, "USER: what colour ASSISTANT: White and red"] * 5, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def _runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Contiguous runs of tokens that carry loss."""
    runs: list[list[int]] = []
    prev = False
    for i, lab in zip(ids, labels, strict=True):
        on = lab != IGNORE_INDEX
        if on:
            assert lab == i
            if not prev:
                runs.append([])
            runs[-1].append(i)
        prev = on
    return runs


def test_generation_prompt_is_vicuna_v1() -> None:
    text = generation_prompt("What is it?", has_image=True)
    assert text == f"{SYSTEM} USER: <image>\nWhat is it? ASSISTANT:"
    assert generation_prompt("Why?", has_image=False) == f"{SYSTEM} USER: Why? ASSISTANT:"


def test_multi_turn_prompt() -> None:
    text = build_prompt([("q1", "a1"), ("q2", "a2"), ("q3", None)])
    # LLaVA's vicuna_v1 string: no space after `</s>`
    assert text == f"{SYSTEM} USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>USER: q3 ASSISTANT:"
    with pytest.raises(ValueError, match="only the last turn"):
        build_prompt([("q1", None), ("q2", "a2")])


def test_image_moves_to_front_of_its_turn() -> None:
    turns = move_image_to_front([("What?\n<image>\nShort.", "x"), ("More?", "y")], has_image=True)
    assert turns[0][0] == "<image>\nWhat?\n\nShort."
    assert turns[1][0] == "More?"
    assert move_image_to_front([("What?", "x")], has_image=True)[0][0] == "<image>\nWhat?"
    with pytest.raises(ValueError, match="no image"):
        move_image_to_front([("<image>\nWhat?", "x")], has_image=False)
    with pytest.raises(ValueError, match="more than one"):
        move_image_to_front([("<image>a", "x"), ("<image>b", "y")], has_image=True)


@pytest.mark.parametrize("which", ["tokenizer", "byte_level_tokenizer"])
def test_only_answers_carry_loss_multi_turn(which: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(which)
    turns = [
        ("<image>\nWhat are the colors of the bus?", "White and red"),
        ("What feature can be seen on the back?", "Advertisement"),
        ("Is it moving?", "No"),
    ]
    ids, labels = tokenize_conversation(turns, tok, image_token_count=9)
    assert len(ids) == len(labels)
    image_id = tok.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == 9
    assert all(lab == IGNORE_INDEX for i, lab in zip(ids, labels, strict=True) if i == image_id)
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX
    assert ids.count(tok.bos_token_id) == 1  # the chunk after the image loses its BOS
    runs = _runs(ids, labels)
    decoded = [tok.decode(r).strip() for r in runs]
    assert decoded == ["White and red</s>", "Advertisement</s>", "No</s>"]
    # everything masked decodes to the prompt parts: no answer text leaks out of the loss
    masked = tok.decode(
        [i for i, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX and i != image_id]
    )
    assert "Advertisement" not in masked and "USER:" in masked and "ASSISTANT:" in masked


def test_text_only_record(tokenizer) -> None:
    turns = [(f"Which is a solid?\nA. milk\nB. rock\n{SCIENCEQA_INSTRUCTION}", "B")]
    ids, labels = tokenize_conversation(turns, tokenizer, image_token_count=0)
    assert tokenizer.convert_tokens_to_ids("<image>") not in ids
    assert [tokenizer.decode(r).strip() for r in _runs(ids, labels)] == ["B</s>"]
    with pytest.raises(ValueError, match="has no image"):
        tokenize_conversation([("<image>\nx", "y")], tokenizer, image_token_count=0)


def test_truncation_keeps_image_block_whole(tokenizer) -> None:
    turns = [("<image>\nq " + "word " * 50, "answer " * 20)]
    ids, labels = tokenize_conversation(turns, tokenizer, image_token_count=16)
    short_ids, short_labels = tokenize_conversation(turns, tokenizer, image_token_count=16, max_length=60)
    assert len(short_ids) == 60 and short_ids == ids[:60] and short_labels == labels[:60]
    with pytest.raises(ValueError, match="cut the image block"):
        tokenize_conversation(turns, tokenizer, image_token_count=16, max_length=20)


def test_turns_from_conversations_errors() -> None:
    conv = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    assert turns_from_conversations(conv) == [("q", "a")]
    with pytest.raises(ValueError, match=r"conversations\[1\]"):
        turns_from_conversations([{"from": "human", "value": "q"}, {"from": "human", "value": "a"}], "f.json")
    with pytest.raises(ValueError, match="pairs"):
        turns_from_conversations(conv[:1])


def test_scienceqa_instruction_exactly_once_with_the_once_option() -> None:
    with_line = f"Which?\nA. x\nB. y\n{SCIENCEQA_INSTRUCTION}"
    without = "Which?\nA. x\nB. y"
    for text in (with_line, without, f"<image>\n{with_line}"):
        q = eval_question(text, "ScienceQA", "once")
        assert q.count(SCIENCEQA_INSTRUCTION) == 1 and q == with_line
    assert eval_question(without, "GQA") == without


def test_the_appended_line_is_a_task_fact_not_a_task_name() -> None:
    """ScienceQA's line comes from its spec (`eval_appends`); any task may declare one; unknown ones: none."""
    assert get_task("ScienceQA").eval_appends == SCIENCEQA_INSTRUCTION
    own = TaskSpec(name="Chart", eval_appends="Answer with a number.")
    assert eval_question("<image>\nHow many bars?", own) == "How many bars?\nAnswer with a number."
    assert eval_question("How many?", "NotRegisteredAnywhere") == "How many?"
    assert eval_question("Which?", "scienceqa") == f"Which?\n{SCIENCEQA_INSTRUCTION}"  # any case, as get_task
