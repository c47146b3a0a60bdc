from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sefe.asd_gen.build import BuildError, BuildOptions, build, plan
from sefe.asd_gen.selection import select
from sefe.coin.layout import asd_manifest_path as manifest_path
from sefe.coin.layout import asd_train_path as output_path
from sefe.coin.records import RecordsError
from sefe.coin.tasks import get_task
from tests.helpers import child_env
from tests.helpers.asd_factory import ScriptedGenerator, write_root


def _load(p: Path) -> list[dict]:
    return orjson.loads(p.read_bytes())


@pytest.mark.parametrize("mode", ["model", "pool"])
def test_build_several_x_nested_unchanged_and_manifest(data_root: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    gen = ScriptedGenerator()
    opts = BuildOptions(data_root=data_root, out=out, xs=[40, 20], seed=5, distractors=mode)  # type: ignore[arg-type]
    res = build(opts, generator=gen)
    assert res.status == "done" and len(gen.calls) == 1  # one engine call serves every X
    for task in ("ScienceQA", "ImageNet", "GQA", "Grounding"):
        raw = _load(data_root / "annotations" / task / "train.json")
        x20, x40 = _load(output_path(out, task, 20)), _load(output_path(out, task, 40))
        assert len(x20) == len(x40) == len(raw)
        ids = [r["id"] for r in raw]
        sel20 = select(task, ids, get_task(task).target_styles, 20, 5)
        sel40 = select(task, ids, get_task(task).target_styles, 40, 5)
        for i, r in enumerate(raw):
            assert x20[i]["id"] == x40[i]["id"] == r["id"]  # order preserved
            if i not in sel20.styles:
                assert x20[i] == r  # unselected: byte-for-byte the same record
            else:
                assert x20[i] == x40[i] != r  # converted once, identical at every X
            if i not in sel40.styles:
                assert x40[i] == r
        m = orjson.loads(manifest_path(out, 20).read_bytes())
        t = m["tasks"][task]
        assert t["selected"] == len(sel20.styles) and t["converted"] == sel20.counts()
        assert t["kept_original"] == {} and t["output"] == f"annotations/{task}/train_x20.json"
        assert abs(t["yes_no"]["Yes"] - t["yes_no"]["No"]) <= 1
        used = {rid for ids_ in t["distractor_sources"].values() for rid in ids_}
        assert used == {ids[i] for i, s in sel20.styles.items() if s in ("mcq", "yn")} - {
            ids[i]
            for i, s in sel20.styles.items()
            if s == "yn" and all(c["value"] == "Yes" for c in x20[i]["conversations"][1::2])
        }
    m = orjson.loads(manifest_path(out, 40).read_bytes())
    assert m["seed"] == 5 and m["x"] == 40 and m["distractors"] == mode and m["backend"] == "scripted"
    assert m["generation"]["requests_sent"] == len(gen.calls[0])
    sources = set(m["tasks"]["GQA"]["distractor_sources"])
    assert sources == {mode} and set(m["tasks"]["ImageNet"]["distractor_sources"]) == {"classes"}


def test_quarantined_records_keep_their_original(data_root: Path, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    build(BuildOptions(data_root=data_root, out=tmp_path / "a", xs=[50], tasks=["GQA"]), generator=gen)
    victim = gen.calls[0][0].record_id
    gen2 = ScriptedGenerator(fail={victim})
    build(BuildOptions(data_root=data_root, out=tmp_path / "b", xs=[50], tasks=["GQA"]), generator=gen2)
    raw = _load(data_root / "annotations" / "GQA" / "train.json")
    got = _load(output_path(tmp_path / "b", "GQA", 50))
    i = next(i for i, r in enumerate(raw) if str(r["id"]) == victim)
    assert got[i] == raw[i]
    m = orjson.loads(manifest_path(tmp_path / "b", 50).read_bytes())
    q = m["tasks"]["GQA"]["kept_original"]["quarantined"]
    assert [e["id"] for e in q] == [raw[i]["id"]] and q[0]["reason"] == "scripted failure"
    assert m["quarantined"][0]["record_id"] == victim and "raw_output" not in m["quarantined"][0]
    assert m["status"] == "complete" and m["tasks"]["GQA"]["status"] == "complete"
    n = m["tasks"]["GQA"]["records"]
    converted = sum(m["tasks"]["GQA"]["converted"].values())
    assert m["tasks"]["GQA"]["effective_x"] == m["effective_x"]["GQA"] == round(100 * converted / n, 2)
    assert converted == m["tasks"]["GQA"]["selected"] - 1  # the quarantined record is a visible shortfall
    # a need nobody answered (server down, spend cap) is open: no file named x50 that does not hold 50%
    gen3 = ScriptedGenerator(skip={victim})
    res = build(BuildOptions(data_root=data_root, out=tmp_path / "d", xs=[50], tasks=["GQA"]), generator=gen3)
    assert res.status == "open" and res.outputs == [] and not output_path(tmp_path / "d", "GQA", 50).exists()
    assert res.open_by_task == {"GQA": {"no answer from the engine": 1}}
    m = orjson.loads(manifest_path(tmp_path / "d", 50).read_bytes())
    assert m["status"] == "incomplete" and m["tasks"]["GQA"]["status"] == "not_written"
    assert m["tasks"]["GQA"]["output"] is None
    # --allow-partial writes it anyway, and says so
    opts = BuildOptions(data_root=data_root, out=tmp_path / "d", xs=[50], tasks=["GQA"], allow_partial=True)
    res = build(opts, generator=ScriptedGenerator(skip={victim}))
    assert res.status == "partial" and _load(output_path(tmp_path / "d", "GQA", 50))[i] == raw[i]
    m = orjson.loads(manifest_path(tmp_path / "d", 50).read_bytes())
    t = m["tasks"]["GQA"]
    assert m["status"] == t["status"] == "partial" and [e["id"] for e in t["kept_original"]["open"]] == [
        raw[i]["id"]
    ]
    assert t["x"] == 50 and t["effective_x"] == round(100 * converted / n, 2) < 50
    style = t["kept_original"]["open"][0]["style"]
    assert t["effective_by_style"][style] == pytest.approx(
        t["requested_by_style"][style] - 100 / n, abs=0.011
    )
    with pytest.raises(BuildError, match="quarantined and --strict"):
        opts = BuildOptions(data_root=data_root, out=tmp_path / "c", xs=[50], tasks=["GQA"])
        opts.generation.strict = True
        build(opts, generator=ScriptedGenerator(fail={victim}))


def test_missing_engine_fails_clearly_and_writes_nothing(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sefe.asd_gen.engine", None)  # as if engine.py did not exist
    with pytest.raises(BuildError) as ei:
        build(BuildOptions(data_root=data_root, out=tmp_path / "o", xs=[20], distractors="pool"))
    msg = str(ei.value)
    assert "generation engine" in msg and "GQA/brief" in msg and "--distractors pool" in msg
    assert "GQA/mcq" not in msg  # pool distractors need no model
    assert not (tmp_path / "o").exists()
    p = plan(BuildOptions(data_root=data_root, out=tmp_path / "o", xs=[20]))
    assert p.estimate_source == "rough" and p.estimate.requests > 0 and p.estimate.tokens_in > 0


def test_plan_counts(data_root: Path, tmp_path: Path) -> None:
    p = plan(BuildOptions(data_root=data_root, out=tmp_path, xs=[20, 100]), generator=ScriptedGenerator())
    assert p.estimate_source == "engine"
    rows = {(r.task, r.x): r for r in p.tasks}
    full = rows[("ImageNet", 100)]
    assert full.selected == 24 and sorted(full.styles.values()) == [6, 6, 6, 6]
    assert full.model_requests == 12  # brief + detail only: ImageNet distractors are class names
    assert (full.tokens_in, full.tokens_out) == (1200, 120)  # this task's 12 needs, as the engine estimates
    assert p.estimate.requests == sum(r.model_requests for r in p.tasks if r.x == 100)
    assert rows[("ImageNet", 20)].selected == 5


def test_bad_input_names_file_and_writes_nothing(tmp_path: Path) -> None:
    root = write_root(tmp_path / "d", {"GQA": 4})
    p = root / "annotations" / "GQA" / "train.json"
    rows = _load(p)
    rows[2]["conversations"][1]["from"] = "assistant"
    p.write_bytes(orjson.dumps(rows))
    with pytest.raises(RecordsError) as ei:
        build(BuildOptions(data_root=root, out=tmp_path / "o"), generator=ScriptedGenerator())
    assert ei.value.index == 2 and ei.value.record_id == "GQA2" and ei.value.field == "conversations[1].from"
    assert not (tmp_path / "o").exists()
    with pytest.raises(BuildError, match=r"VQAv2/train\.json"):
        build(BuildOptions(data_root=root, out=tmp_path / "o", tasks=["VQAv2"]))


def test_unconvertible_record_is_reported_not_fatal(tmp_path: Path) -> None:
    root = write_root(tmp_path / "d", {"Grounding": 8})
    p = root / "annotations" / "Grounding" / "train.json"
    rows = _load(p)
    for r in rows:
        r["conversations"][1]["value"] = "somewhere on the left"  # not a box
    p.write_bytes(orjson.dumps(rows))
    res = build(BuildOptions(data_root=root, out=tmp_path / "o", xs=[100]), generator=ScriptedGenerator())
    t = res.tasks["100"]["Grounding"]
    assert sum(t.converted.values()) == 0 and len(t.kept_original["unconvertible"]) == 8
    assert "not a box" in t.kept_original["unconvertible"][0]["reason"]
    assert _load(output_path(tmp_path / "o", "Grounding", 100)) == rows


_SNIPPET = """
import sys
from pathlib import Path
from tests.helpers.asd_factory import ScriptedGenerator, write_root
from sefe.asd_gen.build import BuildOptions, build
root = write_root(Path(sys.argv[2]) / "d", {"GQA": 30, "ScienceQA": 30, "Grounding": 30, "ImageNet": 30})
build(BuildOptions(data_root=root, out=Path(sys.argv[2]) / "o", xs=[20, 60], distractors="pool"),
      generator=ScriptedGenerator())
"""


def test_same_bytes_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    for h in ("1", "999"):
        subprocess.run(
            [sys.executable, "-c", _SNIPPET, "-", str(tmp_path / h)],
            check=True,
            env=child_env(PYTHONHASHSEED=h),  # the code under test, and tests.helpers
            capture_output=True,
        )
    a = sorted((tmp_path / "1" / "o").rglob("*.json"))
    b = sorted((tmp_path / "999" / "o").rglob("*.json"))
    assert [p.relative_to(tmp_path / "1") for p in a] == [p.relative_to(tmp_path / "999") for p in b]
    assert len(a) == 10
    for pa, pb in zip(a, b, strict=True):
        if "manifest" in pa.name:  # the manifest names its own data root, which differs here
            ma, mb = orjson.loads(pa.read_bytes()), orjson.loads(pb.read_bytes())
            ma.pop("data_root"), mb.pop("data_root")
            assert ma == mb
        else:
            assert pa.read_bytes() == pb.read_bytes()


def test_a_root_that_declares_its_tasks_builds_them_by_default(data_root: Path) -> None:
    """No --tasks and a tasks.json: the root's own tasks (with a train file), found without registration."""
    from sefe.asd_gen.build import resolve_tasks
    from tests.helpers.root_tasks import declare

    shape = {"name": "Shape", "style": "short", "scorer": "ImageNet", "asd": {"candidates": "classes"}}
    declare(data_root, {**shape, "name": "ImageNet2"}, {**shape, "name": "Absent"})
    (data_root / "annotations" / "ImageNet2").mkdir()
    (data_root / "annotations" / "ImageNet" / "train.json").rename(
        data_root / "annotations/ImageNet2/train.json"
    )
    chosen = resolve_tasks(BuildOptions(data_root=data_root))
    assert [(spec.name, spec.candidates, spec.scorer) for spec, _ in chosen] == [
        ("ImageNet2", "classes", "ImageNet")
    ]
    with pytest.raises(BuildError, match=r"no <Task>/train\.json of any declared task"):
        resolve_tasks(BuildOptions(data_root=declare(data_root, {**shape, "name": "Absent"})))
