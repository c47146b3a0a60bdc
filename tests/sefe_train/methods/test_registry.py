"""The method registry: every installed method is selectable, documented and configurable by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.sefe_train.config import ConfigError, load_config
from sefe.sefe_train.methods import (
    ContinualMethod,
    Record,
    UnknownMethodError,
    get_method,
    list_methods,
    method_names,
    register,
    resolve,
)

REPO = Path(__file__).resolve().parents[3]


def test_builtin_methods_are_registered() -> None:
    names = method_names()
    assert {"fft", "lora", "reglora", "replay"} <= set(names)
    assert names == sorted(names) and [m.name for m in list_methods()] == names
    assert get_method("reglora").name == "reglora"
    with pytest.raises(UnknownMethodError, match=r"unknown method 'nope'; installed: .*lora"):
        get_method("nope")


@pytest.mark.parametrize("name", method_names())
def test_every_method_is_described_and_its_defaults_sourced(name: str) -> None:
    cls = get_method(name)
    assert issubclass(cls, ContinualMethod)
    assert cls.summary and cls.paper and cls.kept_between_tasks
    for field, info in cls.options_cls.model_fields.items():
        assert info.description, f"method_options.{name}.{field} has no description (default's source)"


def test_docs_have_one_row_per_installed_method() -> None:
    text = (REPO / "docs" / "METHODS.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert set(method_names()) <= rows
    assert "## How to add a method in one file" in text


def test_unknown_method_and_bad_option_name_the_key() -> None:
    def error(*overrides: str) -> str:
        with pytest.raises(ConfigError) as info:
            resolve(load_config(None, list(overrides)))
        assert "\n" not in str(info.value)  # one line
        return str(info.value)

    assert re.fullmatch(r"method: unknown method 'foo'; installed: fft, .*", error("method=foo"))
    assert error("method=replay", "method_options.replay.shar=0.1").startswith("method_options.replay.shar: ")
    assert error("method_options.replay.share=2").startswith("method_options.replay.share: ")  # le=1
    assert error("method_options.nope.x=1").startswith("method_options.nope: unknown method 'nope'")


def test_method_options_reach_the_method() -> None:
    replay = resolve(load_config(None, ["method=replay", "method_options.replay.share=0.25"]))
    assert replay.name == "replay" and replay.options.share == 0.25
    assert resolve(load_config(None, ["method=fft"])).options.lr == 2e-5
    # RegLoRA's options are one section under two spellings
    cfg = load_config(None, ["method_options.reglora.lam=7", "method_options.reglora.accumulate=concat"])
    assert cfg.reglora.lam == 7 and cfg.reglora.accumulate == "concat" and "reglora" not in cfg.method_options
    assert resolve(cfg).options is cfg.reglora


def test_cli_lists_methods_and_takes_options(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    for name in method_names():
        assert f"{name}:" in help_text
    res = runner.invoke(app, ["train", "-m", "replay", "-o", "share=0.1", "-o", "seed=3", "--print-config"])
    assert res.exit_code == 0, res.output
    assert "replay:\n    share: 0.1\n    seed: 3" in res.output
    res = runner.invoke(app, ["train", "--method", "reglora", "-o", "lam=9", "--print-config"])
    assert res.exit_code == 0 and "lam: 9.0" in res.output
    res = runner.invoke(app, ["train", "--method", "nope", "--print-config"])
    assert res.exit_code == 2 and "installed:" in res.output
    res = runner.invoke(app, ["train", "-m", "replay", "-o", "shar=0.1", "--print-config"])
    assert res.exit_code == 2 and res.output.startswith("error: method_options.replay.shar: ")
    assert res.output.count("\n") == 1  # one line


def test_a_method_in_one_file_registers_itself() -> None:
    @register
    class Dummy(ContinualMethod):
        name = "dummy_for_test"
        summary, paper, kept_between_tasks = "x", "y", "z"

    try:
        assert "dummy_for_test" in method_names()
        assert resolve(load_config(None, ["method=dummy_for_test"])).name == "dummy_for_test"
        with pytest.raises(ValueError, match="registered twice"):

            @register
            class Other(ContinualMethod):
                name = "dummy_for_test"
    finally:
        from sefe.sefe_train import methods

        methods._REGISTRY.pop("dummy_for_test", None)


@pytest.mark.slow
def test_a_registered_method_gets_its_hooks_called_in_order(tmp_path: Path) -> None:
    """A method written as docs/METHODS.md describes runs through `sefe train` with every hook in place."""
    from sefe.models.dataset import load_records
    from sefe.sefe_train.methods.base import LoRAMethod
    from sefe.sefe_train.runner import ContinualRunner
    from sefe.sefe_train.trainer import LossTerm
    from tests.helpers.methods import MethodRecorder
    from tests.helpers.train import make_config

    calls: list[tuple[str, int]] = []
    seen: dict[str, object] = {}

    @register
    class Probe(LoRAMethod):
        name = "probe_for_test"
        summary, paper, kept_between_tasks = "x", "y", "probe.txt"

        def train_records(self, ctx, records):
            calls.append(("train_records", ctx.k))
            seen["record_types"] = {type(r) for r in records}
            return records[:4]  # which records stage k trains on

        def prepare_model(self, ctx, model):
            calls.append(("prepare_model", ctx.k))
            seen["n_dataset"] = len(ctx.dataset)
            return super().prepare_model(ctx, model)

        def loss_terms(self, ctx, model):
            calls.append(("loss_terms", ctx.k))
            params = [p for n, p in model.named_parameters() if "lora_B" in n]
            return [LossTerm("probe_l2", lambda: sum((p.float() ** 2).sum() for p in params), 1.0)]

        def stage_files(self, ctx):
            return ["probe.txt"]

        def after_task(self, ctx, model):
            calls.append(("after_task", ctx.k))
            (ctx.part / "probe.txt").write_text(str(ctx.k))

    try:
        rec = MethodRecorder()
        cfg = make_config(tmp_path, "probe_for_test", ["train.max_steps=2", "eval.enabled=false"])
        ContinualRunner(cfg, callbacks=[rec]).run()
        order = ["train_records", "prepare_model", "loss_terms", "after_task"]
        assert calls == [(c, 1) for c in order] + [(c, 2) for c in order]
        assert (
            seen["record_types"] == {Record}
            and seen["n_dataset"] == 4
            and [b["n_train"] for b in rec.begins] == [4, 4]
        )
        assert len(load_records(cfg.train_path(cfg.tasks[0]))) > 4
        first = next(e["probe_l2"] for e in rec.logs if "probe_l2" in e)
        assert first == pytest.approx(0.0)  # B starts at 0
        assert (tmp_path / "2_TextVQA" / "probe.txt").read_text() == "2"
    finally:
        from sefe.sefe_train import methods

        methods._REGISTRY.pop("probe_for_test", None)
