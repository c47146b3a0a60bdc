from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import sefe.asd_gen.build as build_mod
from sefe.asd_gen.build import BuildError
from sefe.cli import app
from tests.helpers.asd_factory import ScriptedGenerator

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "tasks" / "example.yaml"


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    monkeypatch.setattr(build_mod, "load_engine", lambda opts, works: gen)
    return gen


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(opts, works):  # type: ignore[no-untyped-def]
        raise BuildError("engine not available (test)")

    monkeypatch.setattr(build_mod, "load_engine", refuse)


def test_plan_and_dry_run(data_root: Path, tmp_path: Path, no_engine: None) -> None:
    for cmd in (["asd", "plan"], ["asd", "build", "--dry-run"]):
        r = runner.invoke(
            app,
            [
                *cmd,
                "--data-root",
                str(data_root),
                "--out",
                str(tmp_path / "o"),
                "--x",
                "10,20",
                "--x",
                "40",
                "--tasks",
                "GQA",
                "--tasks",
                "ImageNet",
            ],
            env={"COLUMNS": "200"},
        )
        assert r.exit_code == 0, r.output
        assert "GQA" in r.output and "ImageNet" in r.output and "ScienceQA" not in r.output
        assert "rough estimate" in r.output and r.output.count("GQA") == 3
    assert not (tmp_path / "o").exists()


def test_build_writes_files_and_summary(data_root: Path, tmp_path: Path, scripted: ScriptedGenerator) -> None:
    out = tmp_path / "o"
    r = runner.invoke(
        app,
        [
            "asd",
            "build",
            "--data-root",
            str(data_root),
            "--out",
            str(out),
            "--x",
            "20",
            "--x",
            "40",
            "--seed",
            "3",
            "--distractors",
            "pool",
        ],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    for task in ("ScienceQA", "ImageNet", "GQA", "Grounding"):
        for x in (20, 40):
            assert (out / "annotations" / task / f"train_x{x}.json").is_file()
    m = orjson.loads((out / "annotations" / "asd_manifest_x20.json").read_bytes())
    assert m["seed"] == 3 and m["distractors"] == "pool" and "manifest:" in r.output


def test_bad_options_and_missing_engine(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["asd", "build", "--data-root", str(data_root), "--out", str(tmp_path / "o")]
    r = runner.invoke(app, [*base, "--distractors", "psychic"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "distractors" in r.output
    r = runner.invoke(app, [*base, "--x", "120"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "percentage" in r.output
    r = runner.invoke(app, [*base, "--tasks", "Nope"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "unknown task 'Nope'" in r.output
    monkeypatch.setitem(__import__("sys").modules, "sefe.asd_gen.engine", None)
    r = runner.invoke(app, base, env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "generation engine" in r.output and "--distractors pool" in r.output


def test_task_file_option(tmp_path: Path, scripted: ScriptedGenerator) -> None:
    from tests.helpers.asd_factory import task_records

    p = tmp_path / "d" / "annotations" / "ChartQA" / "train.json"
    p.parent.mkdir(parents=True)
    p.write_bytes(orjson.dumps(task_records("VizWiz", 12)))
    r = runner.invoke(
        app,
        [
            "asd",
            "build",
            "--task-file",
            str(EXAMPLE),
            "--tasks",
            "ChartQA",
            "--data-root",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "o"),
            "--x",
            "50",
        ],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    assert (
        len(orjson.loads((tmp_path / "o" / "annotations" / "ChartQA" / "train_x50.json").read_bytes())) == 12
    )


def test_plan_on_bundled_coin_mini(no_engine: None) -> None:
    r = runner.invoke(app, ["asd", "plan"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for task in ("ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA"):
        assert task in r.output


def test_generation_flags_reach_the_engine(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine options from the command line (incl. --vllm-arg KEY=VALUE) arrive typed in GenerationOptions."""
    seen = {}

    def capture(opts, works):  # type: ignore[no-untyped-def]
        seen["gen"] = opts.generation
        raise BuildError("stop after capturing the options (test)")

    monkeypatch.setattr(build_mod, "load_engine", capture)
    args = [
        "asd",
        "plan",
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path / "o"),
        "--max-tokens",
        "96",
        "--temperature",
        "0.3",
        "--chunk-size",
        "8",
        "--request-timeout",
        "9.5",
        "--vllm-arg",
        "tensor_parallel_size=2",
        "--vllm-arg",
        "enforce_eager=true",
    ]
    runner.invoke(app, args)
    gen = seen["gen"]
    assert (gen.max_tokens, gen.temperature, gen.chunk_size, gen.request_timeout_s) == (96, 0.3, 8, 9.5)
    assert gen.vllm_args == {"tensor_parallel_size": 2, "enforce_eager": True}

    bad = runner.invoke(app, [*args[:6], "--vllm-arg", "no-equals-sign"])
    assert bad.exit_code == 2
    assert "KEY=VALUE" in bad.output


def test_open_needs_exit_4_and_allow_partial(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ScriptedGenerator()
    monkeypatch.setattr(build_mod, "load_engine", lambda opts, works: first)
    base = ["asd", "build", "--data-root", str(data_root), "--tasks", "GQA,ImageNet", "--x", "40"]
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "probe")]).exit_code == 0
    victim = next(n for n in first.calls[0] if n.task == "GQA").record_id
    gen = ScriptedGenerator(skip={victim})  # that need gets no answer (as with a dead server)
    monkeypatch.setattr(build_mod, "load_engine", lambda opts, works: gen)
    out = tmp_path / "o"
    r = runner.invoke(app, [*base, "--out", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 4, r.output
    assert (
        "GQA: 1 needs open (1 no answer from the engine)" in r.stderr
        and "Rerunning the same command" in r.stderr
    )
    assert (
        "GQA: 1 needs open" not in r.stdout
    )  # exit 4: what to do next goes to stderr, as errors do (issue 17.14)
    assert not (out / "annotations" / "GQA" / "train_x40.json").exists()
    assert (out / "annotations" / "ImageNet" / "train_x40.json").is_file()  # the other task is written
    r = runner.invoke(app, [*base, "--out", str(out), "--allow-partial"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert (out / "annotations" / "GQA" / "train_x40.json").is_file()
    m = orjson.loads((out / "annotations" / "asd_manifest_x40.json").read_bytes())
    t = m["tasks"]["GQA"]
    assert m["status"] == t["status"] == "partial" and t["effective_x"] < 40
    assert f"GQA x40: partial, effective X {t['effective_x']:g} of 40" in r.output


def test_a_task_named_dotdot_reads_and_writes_nothing_outside_annotations(
    tmp_path: Path, scripted: ScriptedGenerator
) -> None:
    from tests.helpers.asd_factory import task_records

    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    (root / "train.json").write_bytes(orjson.dumps(task_records("VizWiz", 12)))  # what `..` would reach
    task_file = tmp_path / "dots.yaml"
    task_file.write_text("name: '..'\n")
    out = tmp_path / "o"
    args = ["asd", "build", "--task-file", str(task_file), "--tasks", "..", "--data-root", str(root)]
    r = runner.invoke(app, [*args, "--out", str(out), "--x", "50"], env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1].startswith("error: ") and "dots.yaml" in r.output
    assert "is a path, not a name" in r.output
    assert not list(tmp_path.rglob("train_x50.json"))


def test_stale_temp_files_of_a_killed_build_are_removed_by_the_next(
    data_root: Path, tmp_path: Path, scripted: ScriptedGenerator
) -> None:
    out = tmp_path / "o"
    task_dir = out / "annotations" / "GQA"
    task_dir.mkdir(parents=True)
    stale = [
        task_dir / ".train_x20.json.k3j9_a1.tmp",
        out / "annotations" / ".asd_manifest_x20.json.zz81.tmp",
    ]
    for path in stale:
        path.write_bytes(b'[{"id": "half a file')  # a kill between writing and renaming
    other = task_dir / ".notes.txt.tmp"
    other.write_bytes(b"not ours")
    args = ["asd", "build", "--data-root", str(data_root), "--out", str(out), "--x", "20", "--tasks", "GQA"]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in stale)
    assert other.exists() and (task_dir / "train_x20.json").is_file()
