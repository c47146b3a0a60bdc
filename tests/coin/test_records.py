from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.coin.records import RecordsError, TrainRecord, load_test, load_train, save_train


def _write(p: Path, obj: object) -> Path:
    p.write_bytes(orjson.dumps(obj))
    return p


def test_round_trip_keeps_ids_extras_and_missing_image(tmp_path: Path) -> None:
    rows = [
        {
            "id": 7,
            "image": "a.jpg",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        },
        {
            "id": "007",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            "src": [1],
        },
        {
            "id": "x",
            "image": None,
            "conversations": [{"from": "human", "value": "q", "w": 1}, {"from": "gpt", "value": "a"}],
        },
    ]
    src = _write(tmp_path / "in.json", rows)
    recs = load_train(src)
    assert [type(r.id) for r in recs] == [int, str, str]
    save_train(tmp_path / "out.json", recs)
    assert orjson.loads((tmp_path / "out.json").read_bytes()) == rows


@pytest.mark.parametrize(
    ("record", "field", "needle"),
    [
        (
            {"id": "r1", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
            "conversations",
            "turn 0",
        ),
        (
            {"id": "r1", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
            "conversations[1].from",
            "human",
        ),
        ({"id": "r1"}, "conversations", "missing"),
        (
            {"id": "r1", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]},
            "conversations[0].value",
            "string",
        ),
        (
            {"id": 1.5, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "id",
            "",
        ),
        (
            {
                "id": "r1",
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                    {"from": "human", "value": "q2"},
                ],
            },
            "conversations",
            "no gpt answer",
        ),
    ],
)
def test_bad_record_names_file_index_id_field(tmp_path: Path, record: dict, field: str, needle: str) -> None:
    good = {"id": "ok", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    p = _write(tmp_path / "train.json", [good, good, record])
    with pytest.raises(RecordsError) as ei:
        load_train(p)
    e = ei.value
    assert (e.path, e.index, e.field) == (str(p), 2, field)
    assert e.record_id == record["id"]
    msg = str(e)
    assert str(p) in msg and "record 2" in msg and field in msg and needle in msg


def test_not_json_not_array_not_object(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text('[{"id": 1,')
    with pytest.raises(RecordsError, match="not valid JSON"):
        load_train(p)
    with pytest.raises(RecordsError, match="JSON array"):
        load_train(_write(p, {"id": 1}))
    with pytest.raises(RecordsError, match=r"record 0.*not a JSON object"):
        load_train(_write(p, ["just a string"]))
    with pytest.raises(RecordsError, match="cannot read"):
        load_train(tmp_path / "missing.json")


def test_test_records(tmp_path: Path) -> None:
    rows = [
        {"question_id": "ILSVRC2012_val_1.JPEG", "image": "i.jpg", "text": "What?", "answer": "Banana"},
        {"question_id": 5, "text": "box?", "answer_bbox": "[0.1, 0.2, 0.3, 0.4]", "size": [640, 480], "x": 1},
    ]
    recs = load_test(_write(tmp_path / "test.json", rows))
    assert [r.to_json() for r in recs] == rows
    with pytest.raises(RecordsError) as ei:
        load_test(
            _write(tmp_path / "bad.json", [*rows, {"question_id": 9, "text": "t", "answer_bbox": "[1]"}])
        )
    assert ei.value.index == 2 and ei.value.record_id == 9 and "size" in str(ei.value)


def test_save_is_atomic_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    rec = TrainRecord.model_validate(
        {"id": 1, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    )
    save_train(out, [rec])
    before = out.read_bytes()
    with pytest.raises(TypeError):
        save_train(out, [rec, {"bad": object()}])
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o.json"]  # no temp file left behind
