"""Records in the CoIN formats of the spec, built in code, for the ASD core tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

SHORT = "Answer the question using a single word or phrase."
MCQ = "Answer with the option's letter from the given choices directly."
VIZWIZ = "When the provided information is insufficient, respond with 'Unanswerable'."
GROUND_Q = "Please provide the bounding box coordinate of the region this sentence describes: {}."
COLOURS = ["red", "blue", "green", "yellow", "white", "black"]
CLASSES = ["Espresso maker", "Golden retriever", "Tabby cat", "Fire truck", "Banana", "Violin"]


def conv(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


def task_records(task: str, n: int) -> list[dict[str, Any]]:
    """n records of one CoIN task, in that task's format (multi-turn where CoIN has it)."""
    recs: list[dict[str, Any]] = []
    for i in range(n):
        c = COLOURS[i % len(COLOURS)]
        if task == "ScienceQA":
            opts = ["attract", "repel", "neither"][: 2 + i % 2]
            ctx = "Context: Two magnets are placed as shown.\n" if i % 2 else ""
            q = f"<image>\n{ctx}Will these magnets attract or repel?\n" + "\n".join(
                f"{chr(65 + j)}. {o}" for j, o in enumerate(opts)
            )
            rec: dict[str, Any] = {"id": f"sqa{i}", "conversations": conv((f"{q}\n{MCQ}", "AB"[i % 2]))}
            if i % 3:
                rec["image"] = f"ScienceQA/{i}.png"
            else:  # text-only item: no image key, no image token
                rec["conversations"][0]["value"] = rec["conversations"][0]["value"].replace("<image>\n", "")
            recs.append(rec)
        elif task == "TextVQA":
            q = f"<image>\nwhat is written on the sign?\nReference OCR token: SIGN{i}, ii\n{SHORT}"
            recs.append({"id": f"tv{i}", "image": f"TextVQA/{i}.jpg", "conversations": conv((q, f"sign{i}"))})
        elif task == "ImageNet":
            q = f"<image>\nWhat is the object in the image?\n{SHORT}"
            recs.append({"id": i, "image": f"ImageNet/{i}.JPEG", "conversations": conv((q, CLASSES[i % 6]))})
        elif task in ("GQA", "VQAv2", "OCRVQA"):
            yes_no = "no" if i % 2 else "yes"
            pairs = [(f"<image>\nWhat color is the bus?\n{SHORT}", c), (f"Is the man tall?\n{SHORT}", yes_no)]
            pairs += [(f"How many dogs are there?\n{SHORT}", str(i % 5))] if i % 2 else []
            recs.append(
                {"id": f"{task}{i}", "image": f"COCO/{i}.jpg", "conversations": conv(*pairs), "source": "x"}
            )
        elif task == "VizWiz":
            q = f"<image>\nWhat color is this?\n{VIZWIZ}\n{SHORT}"
            recs.append({"id": f"vw{i}", "image": f"VizWiz/{i}.jpg", "conversations": conv((q, c))})
        elif task == "Grounding":
            x = (i % 5) / 10
            pairs = [
                (
                    ("<image>\n" if t == 0 else "") + GROUND_Q.format(f"the {COLOURS[t]} square"),
                    f"[{x + t * 0.3:.2f}, {0.1:.2f}, {x + t * 0.3 + 0.2:.2f}, {0.4:.2f}]",
                )
                for t in range(1 + i % 2)
            ]
            recs.append({"id": 1000 + i, "image": f"COCO/g{i % 4}.jpg", "conversations": conv(*pairs)})
        else:
            raise ValueError(task)
    return recs


def write_root(root: Path, tasks: dict[str, int]) -> Path:
    for task, n in tasks.items():
        p = root / "annotations" / task / "train.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(orjson.dumps(task_records(task, n)))
    return root


class ScriptedGenerator:
    """A `Generator` for tests of the build: answers every Need with text derived from the Need itself.

    It stands in for the model (the engine has its own tests); `fail` lists record ids to quarantine.
    """

    def __init__(self, fail: set[str] | None = None, skip: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.skip = skip or set()  # answered neither way, as when --max-requests stops the engine
        self.calls: list[list[Any]] = []

    def estimate(self, needs: list[Any], out_dir: str) -> Any:
        from sefe.asd_gen.needs import Estimate

        return Estimate(requests=len(needs), cached=0, tokens_in=100 * len(needs), tokens_out=10 * len(needs))

    def fulfil(self, needs: list[Any], out_dir: str) -> Any:
        from sefe.asd_gen.needs import GenerationOutcome, GenerationReport, NeedFailure, NeedResult

        self.calls.append(list(needs))
        out = GenerationOutcome(
            report=GenerationReport(backend="scripted", model="none", requests_sent=len(needs))
        )
        for n in needs:
            if n.record_id in self.skip:
                continue
            if n.record_id in self.fail:
                out.failures.append(
                    NeedFailure(
                        key=n.key,
                        task=n.task,
                        record_id=n.record_id,
                        kind=n.kind,
                        error="scripted failure",
                        raw_output="{oops",
                        attempts=3,
                    )
                )
            elif n.kind in ("mcq", "yn"):
                k = 3 if n.kind == "mcq" else 1
                out.results[n.key] = NeedResult(
                    distractors=[[f"not {it.answer} {j}" for j in range(k)] for it in n.items]
                )
            else:
                out.results[n.key] = NeedResult(
                    explanations=[f"{n.kind} note on {it.question[:20]}" for it in n.items]
                )
        return out
