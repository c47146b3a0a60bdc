from __future__ import annotations

import copy

from sefe.asd_gen.backends.json_constraint import compile_schema, nonempty_strings
from sefe.asd_gen.schemas import output_spec


def _strings(node: object) -> list[dict]:
    if isinstance(node, dict):
        own = [node] if node.get("type") == "string" else []
        return own + [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_every_string_of_every_request_schema_becomes_non_empty() -> None:
    for kind in ("mcq", "yn", "brief", "detail"):
        schema = output_spec(kind, 3).json_schema
        before = copy.deepcopy(schema)
        grammar_schema = nonempty_strings(schema)
        assert schema == before  # the request's own schema (sent to OpenAI) is not touched
        strings = _strings(grammar_schema)
        assert strings and all(s["minLength"] == 1 for s in strings)
        assert compile_schema(schema)  # llguidance accepts the constrained schema


def test_existing_bounds_are_kept() -> None:
    props = {"a": {"type": "string", "minLength": 5}, "b": {"type": "integer"}}
    schema = {"type": "object", "properties": props}
    out = nonempty_strings(schema)
    assert out["properties"]["a"]["minLength"] == 5
    assert "minLength" not in out["properties"]["b"]
