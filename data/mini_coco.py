"""Grounding and VQAv2 for coin-mini: both ask about the same COCO-layout scene images, as in CoIN.

Grounding boxes follow the spec's Boxes section: from a COCO box (x, y, w, h) take x2 = x + w, y2 = y + h,
shift by half the padding along the short side, divide by max(W, H), print with two decimals. Many scenes are
non-square so the padding matters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sefe.coin.instructions import GROUNDING_PROMPT, SHORT_ANSWER
from sefe.data.mini_bundle import TaskData, cap, conversation, human, task_rng
from sefe.data.mini_scenes import Obj, Scene, random_scene

N_GROUND_TRAIN, N_GROUND_TEST = 32, 14
N_VQA_TRAIN, N_VQA_TEST = 30, 14
SIZES = ((96, 64), (64, 96), (80, 80), (96, 72), (72, 96))


@dataclass
class CocoImage:
    image_id: int
    rel: str
    scene: Scene


def coco_box_to_padded(box: tuple[float, float, float, float], width: int, height: int) -> list[float]:
    """COCO (x, y, w, h) -> [x1, y1, x2, y2] normalised to the image padded to a square (spec: Boxes)."""
    x, y, w, h = box
    x1, y1, x2, y2 = x, y, x + w, y + h
    side = max(width, height)
    if width > height:
        y1 += (width - height) / 2
        y2 += (width - height) / 2
    elif height > width:
        x1 += (height - width) / 2
        x2 += (height - width) / 2
    return [x1 / side, y1 / side, x2 / side, y2 / side]


def box_text(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def obj_coco_box(o: Obj) -> tuple[float, float, float, float]:
    """The pixel box of a drawn shape as COCO writes it (x, y, w, h); pixel boxes are inclusive."""
    x1, y1, x2, y2 = o.box
    return (float(x1), float(y1), float(x2 - x1 + 1), float(y2 - y1 + 1))


def _pool(rng: random.Random, folder: str, prefix: str, n: int, used: set[int]) -> list[CocoImage]:
    images: list[CocoImage] = []
    for _ in range(n):
        image_id = rng.randint(1, 581_000)
        while image_id in used:
            image_id = rng.randint(1, 581_000)
        used.add(image_id)
        w, h = rng.choice(SIZES)
        scene = random_scene(rng, w, h, rng.randint(3, 4), min_size=12, max_size=26)
        images.append(CocoImage(image_id, f"COCO/{folder}/{prefix}_{image_id:012d}.jpg", scene))
    return images


def _grounding_target(rng: random.Random, scene: Scene) -> tuple[Obj, str] | None:
    options = [(o, p) for o in scene.objects if (p := scene.identifying_phrase(o)) is not None]
    return rng.choice(options) if options else None


def _vqa_questions(rng: random.Random, scene: Scene) -> list[tuple[str, str]]:
    qs: list[tuple[str, str]] = []
    kinds = sorted({o.kind for o in scene.objects})
    for kind in kinds:
        n = len(scene.of_kind(kind))
        qs.append((f"How many {kind}s are there?", str(n)))
    for kind in scene.unique_kinds():
        qs.append((f"What color is the {kind}?", scene.of_kind(kind)[0].colour))
    bg = rng.choice(["white", "gray", "beige", "light blue"])
    qs.append((f"Is the background {bg}?", "yes" if bg == scene.background else "no"))
    colours = {o.colour for o in scene.objects}
    probe = rng.choice(["red", "green", "blue", "yellow", "purple", "orange"])
    qs.append((f"Is there anything {probe} in the picture?", "yes" if probe in colours else "no"))
    rng.shuffle(qs)
    return qs


def build(seed: int) -> tuple[TaskData, TaskData, dict[str, bytes]]:
    """Return (Grounding, VQAv2, shared COCO image files)."""
    rng = task_rng(seed, "COCO")
    used: set[int] = set()
    train2014 = _pool(rng, "train2014", "COCO_train2014", 56, used)
    val2014 = _pool(rng, "val2014", "COCO_val2014", N_VQA_TEST, used)
    ground, vqa = TaskData("Grounding"), TaskData("VQAv2")
    needed: dict[str, CocoImage] = {}

    g_rng = task_rng(seed, "Grounding")
    g_images = [im for im in train2014 if any(im.scene.identifying_phrase(o) for o in im.scene.objects)]
    if len(g_images) < N_GROUND_TRAIN + N_GROUND_TEST:
        raise RuntimeError(f"seed {seed}: only {len(g_images)} COCO scenes have a describable object")
    ann_ids = g_rng.sample(range(100_000, 2_200_000), N_GROUND_TRAIN + N_GROUND_TEST)
    for k, im in enumerate(g_images[: N_GROUND_TRAIN + N_GROUND_TEST]):
        target = _grounding_target(g_rng, im.scene)
        assert target is not None
        obj, phrase = target
        w, h = im.scene.width, im.scene.height
        answer = box_text(coco_box_to_padded(obj_coco_box(obj), w, h))
        question = f"{GROUNDING_PROMPT} {phrase}."
        needed[im.rel] = im
        if k < N_GROUND_TRAIN:
            ground.train.append(
                {
                    "id": ann_ids[k],
                    "image": im.rel,
                    "conversations": conversation([(human(question, image=True), answer)]),
                }
            )
        else:
            ground.test.append(
                {
                    "question_id": ann_ids[k],
                    "image": im.rel,
                    "text": question,
                    "answer_bbox": answer,
                    "size": [w, h],
                }
            )

    v_rng = task_rng(seed, "VQAv2")
    # VQAv2 train shares images with Grounding (train2014), then uses its own; test images come from val2014
    for im in train2014[20 : 20 + N_VQA_TRAIN]:
        qs = _vqa_questions(v_rng, im.scene)[: v_rng.randint(2, 4)]
        turns = [(human(q, SHORT_ANSWER, image=(k == 0)), cap(a)) for k, (q, a) in enumerate(qs)]
        vqa.train.append({"id": f"{im.image_id:012d}", "image": im.rel, "conversations": conversation(turns)})
        needed[im.rel] = im
    for im in val2014:
        k = v_rng.randrange(3)
        q, a = _vqa_questions(v_rng, im.scene)[0]
        vqa.test.append(
            {
                "question_id": im.image_id * 1000 + k,
                "image": im.rel,
                "text": f"{q}\n{SHORT_ANSWER}",
                "answer": a,
            }
        )
        needed[im.rel] = im

    shared = TaskData("COCO")
    for rel in sorted(needed):
        shared.add_image(rel, needed[rel].scene.render())
    return ground, vqa, shared.files
