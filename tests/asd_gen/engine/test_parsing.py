"""Lenient JSON extraction and strict validation of model output, for every shape."""

from __future__ import annotations

import pytest

from sefe.asd_gen.parsing import OutputError, parse_and_validate, parse_lenient, repair_json
from sefe.asd_gen.schemas import normalise, output_spec
from tests.helpers.engine import need


def test_fenced_json_with_prose_is_extracted() -> None:
    text = 'Here you go:\n```json\n{"items": [{"distractor": "blue"}]}\n```\nHope it helps.'
    assert parse_lenient(text) == {"items": [{"distractor": "blue"}]}


def test_trailing_commas_and_missing_comma_between_objects_are_repaired() -> None:
    text = '[\n {"question_index": 1, "explanation": "a, b",}\n {"question_index": 2, "explanation": "c"},\n]'
    assert parse_lenient(text) == [
        {"question_index": 1, "explanation": "a, b"},
        {"question_index": 2, "explanation": "c"},
    ]


def test_missing_comma_between_strings_and_properties() -> None:
    assert parse_lenient('{"distractors": ["a" "b", "c"]}') == {"distractors": ["a", "b", "c"]}
    assert parse_lenient('{"a": "x"\n "b": "y"}') == {"a": "x", "b": "y"}


def test_repair_never_touches_string_contents() -> None:
    s = '{"t": "keep ,} and ,] and \\"q\\" [x] {y}"}'
    assert repair_json(s) == s
    assert parse_lenient(s)["t"] == 'keep ,} and ,] and "q" [x] {y}'


@pytest.mark.parametrize("bad", ["", "   ", "no json here", '{"items": [oops', "```json\n{items: [}\n```"])
def test_unusable_text_is_an_output_error(bad: str) -> None:
    with pytest.raises(OutputError):
        parse_lenient(bad)


def test_normalise_ignores_case_punctuation_articles() -> None:
    assert normalise("The Red.") == normalise("red") == "red"
    assert normalise("An  apple!") == "apple"


def _check(kind: str, n: int, text: str, shape: str = "native", task: str = "GQA"):
    nd = need("r1", kind, n, task=task)  # type: ignore[arg-type]
    return parse_and_validate(nd, output_spec(nd.kind, n, shape), text)  # type: ignore[arg-type]


def test_native_mcq_ok_and_count_enforced() -> None:
    r = _check("mcq", 2, '{"items": [{"distractors": ["a","b","c"]}, {"distractors": ["d","e","f"]}]}')
    assert r.distractors == [["a", "b", "c"], ["d", "e", "f"]] and r.explanations is None
    with pytest.raises(OutputError, match="expected 2 entries"):
        _check("mcq", 2, '{"items": [{"distractors": ["a","b","c"]}]}')
    with pytest.raises(OutputError, match="expected 3 distractor"):
        _check("mcq", 1, '{"items": [{"distractors": ["a","b"]}]}')


def test_distractors_must_be_distinct_and_differ_from_answer() -> None:
    with pytest.raises(OutputError, match="duplicate"):
        _check("mcq", 1, '{"items": [{"distractors": ["Blue","blue.","c"]}]}')
    with pytest.raises(OutputError, match="equals the correct answer"):
        _check("mcq", 1, '{"items": [{"distractors": ["The RED0","b","c"]}]}')  # answer is "red0"
    with pytest.raises(OutputError, match="equals the correct answer"):
        _check("yn", 1, '{"items": [{"distractor": "red0!"}]}')
    assert _check("yn", 1, '{"items": [{"distractor": "green"}]}').distractors == [["green"]]


def test_explanation_word_bounds_and_extra_fields() -> None:
    ok = " ".join(["word"] * 20)
    assert _check("brief", 1, f'{{"items": [{{"explanation": "{ok}"}}]}}').explanations == [ok]
    with pytest.raises(OutputError, match="words"):
        _check("brief", 1, '{"items": [{"explanation": "Red."}]}')
    with pytest.raises(OutputError, match="words"):
        _check("detail", 1, '{"items": [{"explanation": "' + " ".join(["w"] * 300) + '"}]}')
    with pytest.raises(OutputError, match="Extra inputs"):
        _check("brief", 1, f'{{"items": [{{"explanation": "{ok}", "answer": "red0"}}]}}')


def test_official_list_shape_maps_by_question_index() -> None:
    e1, e2 = " ".join(["one"] * 12), " ".join(["two"] * 12)
    text = (
        "```json\n[\n"
        f'  {{"question_index": 2, "question": "q2", "answer": "red1", "explanation": "{e2}"}},\n'
        f'  {{"question_index": 1, "question": "q1", "answer": "red0", "explanation": "{e1}"}},\n'
        "]\n```"
    )
    assert _check("detail", 2, text, "official_list").explanations == [e1, e2]
    with pytest.raises(OutputError, match="question_index"):
        _check("detail", 2, text.replace('"question_index": 2', '"question_index": 5'), "official_list")


def test_official_single_imagenet_and_grounding_shapes() -> None:
    r = _check("mcq", 1, '{"distractor_options": ["x", "y", "z",]}', "official_single")
    assert r.distractors == [["x", "y", "z"]]
    assert _check("yn", 1, '{"distractor_option": "x"}', "official_single").distractors == [["x"]]
    txt = " ".join(["fur"] * 10)
    r = _check("brief", 1, f'{{"gt_category": "red0", "explanation": "{txt}"}}', "official_imagenet")
    assert r.explanations == [txt]
    g = f'[{{"target_index": 1, "description": "{txt}"}}]'
    assert _check("brief", 1, g, "official_grounding", task="Grounding").explanations == [txt]


def test_schema_is_strict_with_exact_lengths() -> None:
    s = output_spec("mcq", 3).json_schema
    assert s["additionalProperties"] is False and s["required"] == ["items"]
    items = s["properties"]["items"]
    assert items["minItems"] == items["maxItems"] == 3
    inner = items["items"]["properties"]["distractors"]
    assert inner["minItems"] == inner["maxItems"] == 3
    assert items["items"]["additionalProperties"] is False
    off = output_spec("detail", 2, "official_list").json_schema
    assert off["type"] == "object"  # OpenAI rejects a root array: official arrays are wrapped
