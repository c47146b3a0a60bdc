"""The release's `*_topP.pth` key files: import, export, round trip (issue 9, point 8; PARITY.md row T7).

A release file is written here from the spec: a torch-saved dict, per module (peft name of the release's
model), an int64 tensor of (row, col) pairs, later tasks' pairs concatenated to the earlier ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sefe.sefe_train.reglora.config import RegLoRAConfig
from sefe.sefe_train.reglora.keys import KeyStore
from sefe.sefe_train.reglora.modules import adapted_linears
from sefe.sefe_train.reglora.release_keys import (
    ReleaseKeysError,
    export_release_keys,
    import_release_keys,
    linear_shapes,
    release_name,
)
from tests.helpers.reglora import make_peft_llama, randomise_lora

LLAVA_TEXT = {
    "hidden_size": 24,
    "intermediate_size": 40,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _config(tmp_path: Path, llava: bool) -> Path:
    cfg = (
        {"model_type": "llava", "text_config": LLAVA_TEXT} if llava else {"model_type": "llama", **LLAVA_TEXT}
    )
    folder = tmp_path / ("llava" if llava else "llama")
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _top_pairs(delta: torch.Tensor, percent: float = 2.0) -> torch.Tensor:
    """The release's selection, from the spec: top int(p% * out * in) of |B @ A| in fp32, as (row, col)."""
    flat = delta.float().abs().reshape(-1)
    k = int(percent / 100 * flat.numel())
    idx = torch.topk(flat, k).indices
    return torch.stack([idx // delta.shape[1], idx % delta.shape[1]], dim=1).to(torch.int64)


def _release_file(
    model: torch.nn.Module, previous: dict[str, torch.Tensor] | None, path: Path, alone: Path | None = None
) -> dict[str, torch.Tensor]:
    """The release's file after one more task: this task's pairs concatenated to `previous`.

    `alone` also saves this task's pairs by themselves (a release layout of one file per task).
    """
    accumulated, this_task = {}, {}
    for name, module in model.named_modules():  # the release's peft names, as named_modules gives them
        if isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict) and "default" in module.lora_A:
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
            this_task[name] = _top_pairs(delta.detach(), percent=20.0)
            accumulated[name] = torch.cat([previous[name], this_task[name]]) if previous else this_task[name]
    torch.save(accumulated, path)
    if alone is not None:
        torch.save(this_task, alone)
    return accumulated


def test_linear_shapes_match_the_adapted_linears(tmp_path: Path) -> None:
    model = make_peft_llama()
    shapes = linear_shapes(_config(tmp_path, llava=False))
    assert shapes == {m.name: m.shape for m in adapted_linears(model)}
    llava = linear_shapes(_config(tmp_path, llava=True))
    assert "model.language_model.layers.1.mlp.down_proj" in llava and llava[
        "model.language_model.layers.1.mlp.down_proj"
    ] == (24, 40)
    assert (
        release_name("model.language_model.layers.1.mlp.down_proj")
        == "base_model.model.model.layers.1.mlp.down_proj"
    )


def test_import_a_two_task_release_file_concat_and_union(tmp_path: Path) -> None:
    model = make_peft_llama(seed=1)
    task1 = _release_file(model, None, tmp_path / "t1_top20.pth")
    randomise_lora(model, seed=2)
    task2 = _release_file(model, task1, tmp_path / "t2_top20.pth", alone=tmp_path / "only2.pth")
    shapes = linear_shapes(_config(tmp_path, llava=False))
    concat = import_release_keys([tmp_path / "t2_top20.pth"], shapes, "concat", tasks=2)
    union = import_release_keys([tmp_path / "t2_top20.pth"], shapes, "union", tasks=2)
    for name in shapes:
        pairs = task2[release_name(name)].numpy()
        flat = pairs[:, 0] * shapes[name][1] + pairs[:, 1]
        idx, counts = np.unique(flat, return_counts=True)
        np.testing.assert_array_equal(concat.indices(name), idx)
        np.testing.assert_array_equal(concat.counts(name), counts)
        np.testing.assert_array_equal(union.indices(name), idx)
        assert union.counts(name) is None
    assert any(int(concat.counts(n).max()) == 2 for n in shapes)  # overlaps of the two tasks count twice
    # one file per task, concatenated on import in the order given, is the same store
    per_task = import_release_keys([tmp_path / "t1_top20.pth", tmp_path / "only2.pth"], shapes, "concat")
    assert per_task.tasks == 2
    for name in shapes:
        np.testing.assert_array_equal(per_task.indices(name), concat.indices(name))
        np.testing.assert_array_equal(per_task.counts(name), concat.counts(name))


@pytest.mark.parametrize("accumulate", ["concat", "union"])
def test_round_trip_sefe_keys_through_the_release_format(tmp_path: Path, accumulate: str) -> None:
    model = make_peft_llama(seed=3)
    cfg = RegLoRAConfig(top_percent=10.0, accumulate=accumulate)  # type: ignore[arg-type]
    store = KeyStore.empty().update_from_peft(model, cfg)
    randomise_lora(model, seed=4)
    store.update_from_peft(model, cfg)
    pth = export_release_keys(store, tmp_path / "keys_top10.pth")
    saved = torch.load(pth, weights_only=True)
    assert set(saved) == {release_name(n) for n in store.module_names}
    assert all(t.dtype == torch.int64 and t.shape[1] == 2 for t in saved.values())
    back = import_release_keys([pth], linear_shapes(_config(tmp_path, llava=False)), accumulate, tasks=2)
    back.save(tmp_path / "keys.safetensors")
    again = KeyStore.load(tmp_path / "keys.safetensors")
    for name in store.module_names:
        np.testing.assert_array_equal(again.indices(name), store.indices(name))
        a, b = again.counts(name), store.counts(name)
        assert (a is None and b is None) or np.array_equal(a, b)
    assert again.accumulate == accumulate and again.tasks == 2


def test_bad_release_files_are_named(tmp_path: Path) -> None:
    shapes = linear_shapes(_config(tmp_path, llava=True))
    good = "base_model.model.model.layers.0.self_attn.q_proj"
    cases = {
        "name.pth": (
            {"base_model.model.model.layers.9.self_attn.q_proj": torch.zeros(1, 2, dtype=torch.int64)},
            "no such adapted linear",
        ),
        "dtype.pth": ({good: torch.zeros(1, 2, dtype=torch.int32)}, "int64"),
        "range.pth": ({good: torch.tensor([[0, 24]], dtype=torch.int64)}, r"\(0, 24\) is outside"),
    }
    for file, (data, message) in cases.items():
        torch.save(data, tmp_path / file)
        with pytest.raises(ReleaseKeysError, match=message) as err:
            import_release_keys([tmp_path / file], shapes)
        assert file in str(err.value)


def test_cli_keys_import_and_export(tmp_path: Path) -> None:
    from sefe.cli import app

    model = make_peft_llama(seed=5)
    _release_file(model, None, tmp_path / "r_top20.pth")
    cfg_dir = _config(tmp_path, llava=False)
    out = tmp_path / "keys.safetensors"
    runner = CliRunner()
    res = runner.invoke(
        app, ["keys", "import", str(tmp_path / "r_top20.pth"), "--model", str(cfg_dir), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["keys", "export", str(out), "-o", str(tmp_path / "again_top20.pth")])
    assert res.exit_code == 0, res.output
    a, b = torch.load(tmp_path / "r_top20.pth"), torch.load(tmp_path / "again_top20.pth")
    assert set(a) == set(b)
    for k in a:
        assert sorted(map(tuple, a[k].tolist())) == sorted(map(tuple, b[k].tolist()))
    bad = runner.invoke(
        app, ["keys", "import", str(tmp_path / "missing.pth"), "--model", str(cfg_dir), "-o", str(out)]
    )
    assert bad.exit_code == 2 and "missing.pth" in bad.output
    (tmp_path / "junk.safetensors").write_bytes(b"not a key file")
    junk = runner.invoke(
        app, ["keys", "export", str(tmp_path / "junk.safetensors"), "-o", str(tmp_path / "j.pth")]
    )
    assert junk.exit_code == 2 and "junk.safetensors" in junk.output


@pytest.mark.parametrize("family_name", ["qwen2_5_vl", "qwen3_vl", "internvl"])
def test_keys_round_trip_through_a_family_config(
    family_name: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`sefe keys import --model <Qwen or InternVL folder>`: the shapes read from the folder's config.json are
    the family's LoRA-targeted linears (language model only), and keys taken from a real PEFT model of that
    family survive export -> import unchanged."""
    import re

    from peft import LoraConfig, get_peft_model

    from sefe.cli import app
    from sefe.models import vocab
    from sefe.models.family import get_family
    from tests.helpers.qwen import require_qwen_vocab

    require_qwen_vocab(vocab.vocab_dir())
    family = get_family(family_name)
    folder = family.tiny_dir(tmp_path_factory.mktemp("sefe-cache"))
    model, _ = family.load(folder)
    target = re.compile(family.lora_target_regex)
    want = {
        name: tuple(mod.weight.shape)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and target.fullmatch(name)
    }
    assert want and all(".language_model." in n for n in want)
    assert linear_shapes(folder) == want

    # the published Qwen2.5-VL config.json keeps the text sizes at the top level, beside vision_config
    cfg = json.loads((folder / "config.json").read_text())
    flat = {**{k: v for k, v in cfg.items() if k != "text_config"}, **cfg["text_config"]}
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "config.json").write_text(json.dumps(flat))
    assert linear_shapes(tmp_path / "flat") == want

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=family.lora_target_regex))
    randomise_lora(peft_model, seed=3)
    store = KeyStore.empty().update_from_peft(peft_model, RegLoRAConfig(top_percent=20.0))
    store.save(tmp_path / "keys.safetensors")
    runner = CliRunner()
    res = runner.invoke(
        app, ["keys", "export", str(tmp_path / "keys.safetensors"), "-o", str(tmp_path / "k.pth")]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        ["keys", "import", str(tmp_path / "k.pth"), "--model", str(folder), "-o", str(tmp_path / "back.st")],
    )
    assert res.exit_code == 0, res.output
    back = KeyStore.load(tmp_path / "back.st")
    assert set(back.module_names) == set(store.module_names) == set(want)
    for name in want:
        np.testing.assert_array_equal(back.indices(name), store.indices(name))
