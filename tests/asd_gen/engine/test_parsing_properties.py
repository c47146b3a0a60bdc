"""Property tests: repairs never change valid JSON, and undo trailing commas / one dropped comma."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sefe.asd_gen.parsing import parse_lenient, repair_json

text = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(
        ["a, b", "x}", "]", "```json", '"q"', "{[", "\\", ",]"]
    ),  # structure-like text in strings
)
leaf = st.one_of(text, st.integers(-1000, 1000), st.booleans(), st.none())
values = st.recursive(
    leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)
containers = st.one_of(
    st.lists(values, min_size=1, max_size=4), st.dictionaries(text, values, min_size=1, max_size=4)
)


@settings(max_examples=150, deadline=None)
@given(containers)
def test_valid_json_is_left_alone(v: object) -> None:
    s = json.dumps(v, ensure_ascii=False, indent=1)
    assert repair_json(s) == s
    assert parse_lenient(s) == v


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(text, text, min_size=1, max_size=3), min_size=2, max_size=5), st.data())
def test_trailing_commas_and_one_dropped_comma_are_undone(
    objs: list[dict[str, str]], data: st.DataObject
) -> None:
    parts = [json.dumps(o, ensure_ascii=False) for o in objs]
    drop = data.draw(st.integers(0, len(parts) - 2))  # the comma after this object goes missing
    body = "".join(p + ("\n" if i == drop else ",\n") for i, p in enumerate(parts[:-1])) + parts[-1]
    broken = "```json\n[" + body + ",\n]\n```"  # plus a trailing comma, inside a fence
    assert parse_lenient(broken) == objs
