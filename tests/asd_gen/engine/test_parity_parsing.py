"""ASD parsing parity with the official prompt files (issue 9, point 9; docs/PARITY.md row A3).

The release's example JSON carries `// Repeat for each ...` comment lines that models copy; the yes/no list
shape must reject an empty distractor and one equal to the entry's own answer (the engine then retries).
"""

from __future__ import annotations

import orjson
import pytest

from sefe.asd_gen.parsing import OutputError, parse_and_validate, parse_lenient
from sefe.asd_gen.schemas import OfficialListYN, output_spec
from tests.helpers.engine import need

COPIED_EXAMPLE = """```json
[
  {
    "question_index": 1,
    "question": "What colour is object 0 in record r1?",
    "correct_answer": "red0",
    "distractor_option": "blue" // the wrong option
  },
  // Repeat for each question in the list
  {
    "question_index": 2,
    "question": "What colour is object 1 in record r1?",
    "correct_answer": "red1",
    "distractor_option": "see http://example.org/a//b"
  }
  // Repeat for each question in the list
  /* up to the last question */
]
```"""


def test_output_copying_the_comment_lines_parses() -> None:
    data = parse_lenient(COPIED_EXAMPLE)
    assert [e["distractor_option"] for e in data] == ["blue", "see http://example.org/a//b"]
    nd = need("r1", "yn", 2)
    result = parse_and_validate(nd, output_spec("yn", 2, "official_list"), COPIED_EXAMPLE)
    assert result.distractors == [["blue"], ["see http://example.org/a//b"]]


def test_comment_between_objects_without_a_comma() -> None:
    text = '[{"a": 1}\n// Repeat for each question\n{"a": 2}]'
    assert parse_lenient(text) == [{"a": 1}, {"a": 2}]


def _yn(distractor: str, answer: str = "red0") -> str:
    entry = {"question_index": 1, "question": "q", "correct_answer": answer, "distractor_option": distractor}
    return orjson.dumps([entry]).decode()


@pytest.mark.parametrize("distractor", ["", "  ", "..."])
def test_yes_no_list_rejects_an_empty_distractor(distractor: str) -> None:
    with pytest.raises(OutputError, match="empty distractor"):
        parse_and_validate(need("r1", "yn", 1), output_spec("yn", 1, "official_list"), _yn(distractor))


def test_yes_no_list_rejects_a_distractor_equal_to_its_answer() -> None:
    ctx = {"n_distractors": 1}
    entry = {"question_index": 1, "question": "q", "correct_answer": "A dog", "distractor_option": "dog."}
    with pytest.raises(ValueError, match="equals the correct answer"):
        OfficialListYN.model_validate(entry, context=ctx)
    with pytest.raises(OutputError, match="equals the correct answer"):
        text = _yn("The Cat", answer="cat")
        parse_and_validate(need("r1", "yn", 1), output_spec("yn", 1, "official_list"), text)
    ok = OfficialListYN.model_validate({**entry, "distractor_option": "a cat"}, context=ctx)
    assert ok.distractor_option == "a cat"
