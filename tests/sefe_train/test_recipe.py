"""The release's training recipe switches (issue 9, point 7): each reaches the Trainer, and the paper config
sets the release's values (docs/PARITY.md)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from sefe.models.sampling import ModalityLengthGroupedSampler, modality_length_grouped_order
from sefe.sefe_train.config import load_config
from sefe.sefe_train.runner import ContinualRunner
from sefe.sefe_train.stage_model import add_fresh_lora, load_base
from sefe.sefe_train.trainer import build_trainer, tf32_kwargs
from tests.helpers.train import Recorder, make_config

REPO = Path(__file__).resolve().parents[2]


def test_paper_config_has_the_release_recipe() -> None:
    cfg = load_config(REPO / "configs" / "coin-llava7b.yaml")
    t = cfg.train
    assert t.max_grad_norm == 0  # no `gradient_clipping` in the release's DeepSpeed file: none
    assert t.tf32 is True and t.group_by_modality_length is True
    assert t.loss_averaging == "micro_batch"
    assert cfg.model.dtype == "bf16" and cfg.model.merged_dtype == "fp16"
    assert cfg.eval.max_new_tokens == 1024


def test_clipping_and_tf32_reach_the_training_arguments(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "lora", ["train.max_grad_norm=0", "train.tf32=true"], tasks=["ScienceQA"])
    model, processor = load_base(cfg, None)
    trainer = build_trainer(cfg, add_fresh_lora(cfg, model), processor, [], None, tmp_path / "ck")
    assert trainer.args.max_grad_norm == 0
    assert tf32_kwargs(cfg.train, cuda=True) == {"tf32": True}
    assert tf32_kwargs(cfg.train, cuda=False) == {}  # transformers refuses tf32 without CUDA
    assert tf32_kwargs(make_config(tmp_path, "lora").train, cuda=True) == {}  # unset: torch's default
    default = make_config(tmp_path, "lora").train
    assert default.max_grad_norm == 1.0 and default.loss_averaging == "global_tokens"


# ---- LLaVA's modality-grouped length sampler ------------------------------------------------------


def _modality_lengths(n_image: int, n_text: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    lengths = [int(x) for x in torch.randint(1, 500, (n_image + n_text,), generator=gen)]
    kinds = [1] * n_image + [-1] * n_text
    order = torch.randperm(len(kinds), generator=gen).tolist()
    return [lengths[i] * kinds[order[i]] for i in range(len(kinds))]


@pytest.mark.parametrize(("batch", "world"), [(4, 1), (2, 3), (16, 8)])
def test_image_and_text_records_never_share_a_batch(batch: int, world: int) -> None:
    ml = _modality_lengths(203, 91)
    torch.manual_seed(1)
    order = modality_length_grouped_order(ml, batch, world)
    assert sorted(order) == list(range(len(ml)))  # a permutation: every record once
    mega = batch * world
    n_full = (203 // mega) + (91 // mega)  # full single-modality megabatches; the rest is one last block
    for m in range(n_full):
        block = order[m * mega : (m + 1) * mega]
        assert len({ml[i] > 0 for i in block}) == 1, f"megabatch {m} mixes image and text records"
        for d in range(world):  # each device batch: one modality, and from a block sorted by length
            dev = block[d * batch : (d + 1) * batch]
            assert len({ml[i] > 0 for i in dev}) == 1
            assert [abs(ml[i]) for i in dev] == sorted((abs(ml[i]) for i in dev), reverse=True)
        # the block's longest records are spread over the devices (balanced by total length)
        longest = sorted(block, key=lambda i: abs(ml[i]), reverse=True)[:world]
        assert {block.index(i) // batch for i in longest} == set(range(world))
    tail = order[n_full * mega :]
    assert len(tail) == 203 % mega + 91 % mega and tail == sorted(tail)


def test_one_modality_is_plain_length_grouping_and_the_order_is_seeded() -> None:
    ml = _modality_lengths(50, 0)
    torch.manual_seed(3)
    a = modality_length_grouped_order(ml, 4, 2)
    torch.manual_seed(3)
    assert a == modality_length_grouped_order(ml, 4, 2) and sorted(a) == list(range(50))
    torch.manual_seed(4)
    assert a != modality_length_grouped_order(ml, 4, 2)
    with pytest.raises(ValueError, match="non-zero"):
        modality_length_grouped_order([3, 0, -2], 1, 1)


def test_trainer_uses_the_modality_sampler_when_asked(tmp_path: Path) -> None:
    from sefe.models.dataset import DataCollator, LlavaDataset

    cfg = make_config(
        tmp_path,
        "lora",
        ["train.group_by_modality_length=true", "train.global_batch_size=4"],
        tasks=["ScienceQA"],
    )
    model, processor = load_base(cfg, None)
    data = LlavaDataset(cfg.train_path(cfg.tasks[0]), cfg.resolved_data_root(), processor, 128)
    kinds = Counter(n > 0 for n in data.modality_lengths)
    assert kinds[True] and kinds[False]  # coin-mini ScienceQA has image and text-only records
    trainer = build_trainer(
        cfg, add_fresh_lora(cfg, model), processor, data, DataCollator(processor), tmp_path / "ck"
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, ModalityLengthGroupedSampler)
    assert sampler.batch_size == 2 and sampler.world_size == 2  # per-device batch; 1 process x 2 accumulation
    batches = list(trainer.get_train_dataloader())
    pure = ["pixel_values" not in b or b["pixel_values"].shape[0] == b["input_ids"].shape[0] for b in batches]
    # only the final block (each modality's last megabatch of 4, joined) may mix the two kinds
    last = [n - 4 * ((n - 1) // 4) for n in (kinds[True], kinds[False])]
    tail_batches = -(-sum(last) // 2)
    assert all(pure[: len(batches) - tail_batches])
    assert any("pixel_values" in b for b in batches) and not all("pixel_values" in b for b in batches)


# ---- the release's loss averaging -------------------------------------------------------------------


def _per_record_ce(model, batches) -> list[tuple[float, int]]:
    """(sum of token CE, label-token count) of each record, from a plain forward pass."""
    out = []
    model.eval()
    with torch.no_grad():
        for b in batches:
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits[:, :-1]
            labels = b["labels"][:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), reduction="sum"
            )
            out.append((float(ce), int(labels.ne(-100).sum())))
    return out


@pytest.mark.slow
def test_micro_batch_and_global_token_means_differ_as_defined(tmp_path: Path) -> None:
    from sefe.models.dataset import DataCollator, LlavaDataset

    logged = {}
    for mode in ("global_tokens", "micro_batch"):
        cfg = make_config(
            tmp_path / mode,
            "lora",
            [
                "train.global_batch_size=2",
                "train.per_device_batch_size=1",  # two micro-batches of one record: accumulation 2
                "train.max_steps=1",
                "train.group_by_length=false",
                "lora.dropout=0",
                f"train.loss_averaging={mode}",
            ],
            tasks=["TextVQA"],
        )
        model, processor = load_base(cfg, None)
        data = LlavaDataset(cfg.train_path(cfg.tasks[0]), cfg.resolved_data_root(), processor, 128)
        counts = [int((data[i]["labels"] != -100).sum()) for i in range(len(data))]
        pick = [0, next(i for i, c in enumerate(counts) if c != counts[0])]  # two different answer lengths
        data.set_records([data.records[i] for i in pick])
        collate = DataCollator(processor)
        ref = _per_record_ce(model, [collate([data[0]]), collate([data[1]])])
        torch.manual_seed(0)
        trainer = build_trainer(
            cfg, add_fresh_lora(cfg, model), processor, data, collate, tmp_path / mode / "ck"
        )
        trainer.train()
        logged[mode] = next(e["loss"] for e in trainer.state.log_history if "loss" in e)
    (s1, n1), (s2, n2) = ref
    assert n1 != n2
    global_mean = (s1 + s2) / (n1 + n2)  # transformers 5: the global batch's token mean
    micro_mean = (s1 / n1 + s2 / n2) / 2  # transformers 4.37 / the release: mean of micro-batch means
    assert abs(global_mean - micro_mean) > 1e-3
    assert logged["global_tokens"] == pytest.approx(global_mean, rel=1e-4)
    assert logged["micro_batch"] == pytest.approx(micro_mean, rel=1e-4)


# ---- merge saved in fp16, reloaded in the run's dtype -----------------------------------------------


@pytest.mark.slow
def test_merged_saved_in_fp16_and_reloaded_in_bf16(tmp_path: Path) -> None:
    from safetensors import safe_open

    rec = Recorder()
    cfg = make_config(
        tmp_path / "run",
        "lora",
        ["model.dtype=bf16", "model.merged_dtype=fp16", "train.max_steps=1", "eval.enabled=false"],
    )
    ContinualRunner(cfg, callbacks=[rec]).run()
    merged = tmp_path / "run" / "1_ScienceQA" / "merged"
    meta = json.loads((merged / "config.json").read_text())
    assert meta.get("dtype", meta.get("torch_dtype")) == "float16"
    with safe_open(str(merged / "model.safetensors"), framework="pt") as fh:
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118 - safe_open is no dict
    assert dtypes == {"F16"}
    assert rec.begins[1]["frozen_lm_dtypes"] == {torch.bfloat16}  # stage 2 reloads the fp16 file in bf16


def test_coin_moelora_recipe_is_coins_own() -> None:
    """configs/coin-moelora-coin.yaml: CoIN's MoELoRA scripts (zackschen/CoIN scripts/LLaVA/Train_MOE): 8
    experts sharing r 128, batch 14 x 8 accumulation x 8 GPUs = 896, lr 2e-4 / projector 2e-5, CoIN's
    original training files."""
    cfg = load_config(REPO / "configs" / "coin-moelora-coin.yaml")
    t = cfg.train
    from sefe.sefe_train.methods import resolve

    assert cfg.method == "moelora" and resolve(cfg).options.experts == 8  # type: ignore[attr-defined]
    assert cfg.lora.r == 128 and cfg.lora.alpha == 256
    assert t.global_batch_size == 896 and t.per_device_batch_size == 14 and t.grad_accum(8) == 8
    assert t.lr == 2e-4 and t.projector_lr == 2e-5 and t.epochs == 1 and t.warmup_ratio == 0.03
    assert cfg.train_path(cfg.tasks[0]).as_posix().endswith("annotations/ScienceQA/train.json")
    assert len(cfg.tasks) == 8
