"""Prompt folders are untrusted: templates render in a sandbox and can only format the record's fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sefe.asd_gen.prompt_templates import PromptError, PromptSet
from sefe.cli import app
from tests.helpers.engine import need

ESCAPE = "{{ cycler.__init__.__globals__.os.popen('id > %s').read() }}"


def _prompts(tmp_path: Path, body: str) -> tuple[Path, Path]:
    pwned = tmp_path / "pwned"
    folder = tmp_path / "P" / "default"
    folder.mkdir(parents=True)
    (folder / "brief.j2").write_text("Explain the answer.\n" + body.replace("%s", str(pwned)) + "\n")
    return tmp_path / "P", pwned


def test_escape_attempt_through_asd_plan_runs_nothing(tmp_path: Path) -> None:
    prompts, pwned = _prompts(tmp_path, ESCAPE)
    r = CliRunner().invoke(app, ["asd", "plan", "--prompts", str(prompts), "--tasks", "GQA"])
    assert not pwned.exists()
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"{prompts / 'default' / 'brief.j2'}: line 2" in line
    assert "not allowed" in line


@pytest.mark.parametrize(
    "body",
    [
        ESCAPE,
        "{{ items.__class__.__mro__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ namespace() }}",
        "{% set _ = items.append(1) %}",
    ],
)
def test_every_reach_outside_the_fields_is_a_prompt_error(tmp_path: Path, body: str) -> None:
    prompts, pwned = _prompts(tmp_path, body)
    with pytest.raises(PromptError, match=r"brief\.j2: line 2: record r1"):
        PromptSet(prompts).render(need("r1", "brief", 1, task="GQA"))
    assert not pwned.exists()


def test_fields_loops_and_filters_still_render(tmp_path: Path) -> None:
    body = "{% for it in items %}{{ it.index }}. {{ it.question | upper }} {{ range(2) | list }}{% endfor %}"
    prompts, _ = _prompts(tmp_path, body)
    _, _, user = PromptSet(prompts).render(need("r1", "brief", 1, task="GQA"))
    assert "1. WHAT COLOUR IS OBJECT 0 IN RECORD R1?" in user and "[0, 1]" in user


@pytest.mark.parametrize("target", ["../../secret.txt", "/etc/hostname", "default/../../secret.txt"])
def test_an_include_outside_the_prompt_folders_is_refused_unread(tmp_path: Path, target: str) -> None:
    prompts, _ = _prompts(tmp_path, '{% include "' + target + '" %}')
    with pytest.raises(PromptError, match=r"brief\.j2.*include .* leaves the prompt folders"):
        PromptSet(prompts).render(need("r1", "brief", 1, task="GQA"))
