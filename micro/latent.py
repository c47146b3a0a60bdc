"""The latent-probe matrix of one Micro-CoIN run: `<run>/latent.json` (percent, same shape as accuracy).

Cell (k, i): the linear probe of task i, fitted on the stage-i model's last-prompt-token states of task i's
train questions (its original data, the answers as labels) and saved in `<run>/latent/<Task>.json`, applied
unchanged to the stage-k model's states of task i's test questions (`sefe.evaluation.latent_probe`). Runs
after the continual run, from the merged model every stage keeps; resumable (rows already there and fitted
probes are reused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

LATENT_FILE = "latent.json"
LATENT_DIR = "latent"


def _prompts(root: Path, task: str, split: str, limit: int) -> tuple[list[Any], list[str]]:
    """(question, image) pairs and their gold answers for `limit` records of a split."""
    import orjson

    from sefe.coin.images import open_image
    from sefe.coin.layout import evaluation_file, train_path
    from sefe.models.conversation import eval_question

    path = train_path(root, task) if split == "train" else evaluation_file(root, task)
    records = orjson.loads(path.read_bytes())[:limit]
    prompts, labels = [], []
    for r in records:
        if split == "train":
            question, answer = r["conversations"][0]["value"], r["conversations"][1]["value"]
        else:
            question, answer = r["text"], r.get("answer", r.get("answer_bbox"))
        img = open_image(root, r["image"], f"latent probe {task} {r.get('id', r.get('question_id'))}")
        prompts.append((eval_question(question, task), img))
        labels.append(str(answer))
    return prompts, labels


def record_latent(
    run: Path, root: Path, tasks: list[str], n_fit: int = 400, console: Console | None = None
) -> Path:
    """Fill `<run>/latent.json` for every finished stage; returns its path."""
    from sefe.evaluation.latent_probe import LinearProbe, fit_probe, last_prompt_states
    from sefe.evaluation.metrics import AccuracyMatrix
    from sefe.models.family import family_for_folder
    from sefe.sefe_train.run_layout import MERGED_DIR, stage_dir

    run, root = Path(run), Path(root)
    path = run / LATENT_FILE
    matrix = AccuracyMatrix.load(path) if path.is_file() else AccuracyMatrix(tasks=tasks, mode="fixed")
    (run / LATENT_DIR).mkdir(exist_ok=True)
    for k, task_k in enumerate(tasks):
        merged = stage_dir(run, k + 1, task_k) / MERGED_DIR
        if not merged.is_dir():
            break
        if all(matrix.get(k, i) is not None for i in range(k + 1)):
            continue
        family = family_for_folder(merged)
        model, processor = family.load(merged)
        for i, task_i in enumerate(tasks[: k + 1]):
            probe_file = run / LATENT_DIR / f"{task_i}.json"
            if i == k and not probe_file.is_file():
                prompts, labels = _prompts(root, task_i, "train", n_fit)
                states = last_prompt_states(model, processor, prompts, family=family)
                fit_probe(states, labels).save(probe_file)
            if not probe_file.is_file():  # its own stage ran before this code existed: no probe to apply
                continue
            prompts, labels = _prompts(root, task_i, "test", 10**9)
            states = last_prompt_states(model, processor, prompts, family=family)
            hits = LinearProbe.load(probe_file).hits(states, labels)
            matrix.set(k, i, 100.0 * sum(hits) / max(1, len(hits)), {"correct": hits})
        matrix.save(path)
        if console is not None:
            row = ", ".join(
                f"{t} {v:.0f}" for t, v in zip(tasks, matrix.rows[k], strict=False) if v is not None
            )
            console.print(f"latent probe after stage {k + 1} ({task_k}): {row}")
    return path
