"""TextVQA for coin-mini: signs, doors and drink cans with a word or number drawn on them.

Questions carry the `Reference OCR token:` line CoIN's TextVQA prompts have. The official-format ground truth
`eval_gt/TextVQA/TextVQA_0.5.1_val.json` holds ten human answers per test question with realistic
disagreement (case, extra words, the odd wrong or unanswerable answer), so soft VQA accuracy is non-trivial.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from sefe.coin.instructions import SHORT_ANSWER
from sefe.coin.layout import bundled_gt_files
from sefe.data.mini_bundle import TaskData, cap, conversation, human, task_rng
from sefe.data.mini_draw import COLOURS, draw_text, draw_text_centered, fit_scale, new_canvas, text_size

N_TRAIN, N_TEST = 32, 12
W, H = 96, 72

_SIGN_WORDS = [
    "STOP",
    "EXIT",
    "OPEN",
    "SALE",
    "PARK",
    "CAFE",
    "HOTEL",
    "BANK",
    "TAXI",
    "PIZZA",
    "MARKET",
    "BAKERY",
]
_BRANDS = ["ZESTO", "KOLA", "FIZZ", "MAXO", "LUMA", "NOVA", "PEAK"]
_STREETS = ["MAIN", "OAK", "ELM", "PINE", "HILL"]


def _sign(rng: random.Random) -> tuple[Image.Image, str, str, list[str], str]:
    img = new_canvas(W, H, rng.choice([(170, 210, 240), (200, 200, 200), (120, 170, 110)]))
    word = rng.choice(_SIGN_WORDS)
    colour = rng.choice(["red", "blue", "green"])
    img.paste(Image.new("RGB", (80, 34), COLOURS[colour]), (8, 10))
    img.paste(Image.new("RGB", (4, 26), (90, 90, 90)), (46, 44))
    draw_text_centered(img, 27, word, COLOURS["white"], fit_scale(word, 76, 2))
    question = rng.choice(
        ["what does the sign say?", "what word is written on the sign?", "what is written on the sign?"]
    )
    return img, question, word.lower(), [word], "sign"


def _door(rng: random.Random) -> tuple[Image.Image, str, str, list[str], str]:
    img = new_canvas(W, H, (225, 205, 160))
    number = str(rng.randint(2, 99))
    street = rng.choice(_STREETS)
    img.paste(Image.new("RGB", (34, 58), (120, 70, 30)), (31, 14))
    draw_text_centered(img, 30, number, COLOURS["yellow"], 2)
    draw_text(img, (2, 2), street, COLOURS["black"])
    question = rng.choice(["what number is on the door?", "what is the house number?"])
    return img, question, number, [street, number], "door"


def _can(rng: random.Random) -> tuple[Image.Image, str, str, list[str], str]:
    img = new_canvas(W, H, (245, 245, 240))
    brand = rng.choice(_BRANDS)
    colour = rng.choice(["red", "purple", "orange", "green"])
    img.paste(Image.new("RGB", (44, 60), COLOURS[colour]), (26, 6))
    img.paste(Image.new("RGB", (44, 4), (180, 180, 180)), (26, 6))
    scale = fit_scale(brand, 42, 2)
    w, h = text_size(brand, scale)
    draw_text(img, (48 - w // 2, 36 - h // 2), brand, COLOURS["white"], scale)
    question = rng.choice(["what brand is this drink?", "what is the name of this drink?"])
    return img, question, brand.lower(), [brand], "can"


_MAKERS = (_sign, _door, _can)


def _human_answers(rng: random.Random, answer: str, kind: str) -> list[str]:
    """Ten answers as annotators give them: mostly the text, some variants, now and then noise."""
    variants = {
        "sign": [answer.upper(), f"{answer} sign", f"{answer}."],
        "door": [f"#{answer}", f"number {answer}", answer],
        "can": [answer.upper(), f"{answer} soda", f"{answer} drink"],
    }[kind]
    n_main = rng.randint(3, 9)  # at 3 even the majority answer scores only 0.9
    while True:  # the text itself stays the most frequent answer, as for nearly every real question
        rest = [rng.choice([*variants, "unanswerable", "yes"]) for _ in range(10 - n_main)]
        if all(rest.count(v) < n_main for v in rest if v != answer):
            break
    answers = [answer] * n_main + rest
    rng.shuffle(answers)
    return answers


def _ocr_line(rng: random.Random, tokens: list[str]) -> str:
    shown = tokens[:]
    if rng.random() < 0.4:  # OCR systems misread now and then: add a garbled extra token
        shown.append(rng.choice(["ll", "O", "1", "ii", "EE"]))
    return "Reference OCR token: " + ", ".join(shown)


def build(seed: int) -> TaskData:
    rng = task_rng(seed, "TextVQA")
    out = TaskData("TextVQA")
    image_ids = [f"{rng.getrandbits(64):016x}" for _ in range(N_TRAIN + N_TEST)]
    question_ids = sorted(rng.sample(range(34602, 39602), N_TEST))
    gt_rows: list[dict[str, Any]] = []
    for i, image_id in enumerate(image_ids):
        img, question, answer, tokens, kind = _MAKERS[i % len(_MAKERS)](rng)
        rel = out.add_image(f"TextVQA/train_images/{image_id}.jpg", img)
        text = f"{question}\n{_ocr_line(rng, tokens)}"
        if i < N_TRAIN:
            out.train.append(
                {
                    "id": image_id,
                    "image": rel,
                    "conversations": conversation([(human(text, SHORT_ANSWER, image=True), cap(answer))]),
                }
            )
            continue
        qid = question_ids[i - N_TRAIN]
        answers = _human_answers(rng, answer, kind)
        majority = max(sorted(set(answers)), key=answers.count)
        out.test.append(
            {"question_id": qid, "image": rel, "text": f"{text}\n{SHORT_ANSWER}", "answer": majority}
        )
        gt_rows.append(
            {
                "question": question,
                "image_id": image_id,
                "image_classes": [{"sign": "Street sign", "door": "Door", "can": "Tin can"}[kind]],
                "flickr_original_url": f"https://coin-mini.invalid/textvqa/{image_id}_o.jpg",
                "flickr_300k_url": f"https://coin-mini.invalid/textvqa/{image_id}_z.jpg",
                "image_width": W,
                "image_height": H,
                "answers": answers,
                "question_tokens": question.rstrip("?").split(),
                "question_id": qid,
                "set_name": "val",
            }
        )
    out.add_json(
        bundled_gt_files("TextVQA")[0],
        {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": gt_rows},
    )
    return out
