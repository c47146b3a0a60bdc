"""The eight CoIN scorers, in two modes: `compat` (published numbers, quirks included) and `fixed`.

`compat` reproduces the published CoIN/SEFE scorers to the last digit (rules in the scoring spec): it divides
by what they divide by (usually the number of predictions) and aligns the way they align (ImageNet by
position). `fixed` corrects the known bugs and always divides by the test set, counting a test record with
no prediction as wrong. In both modes the result says how many test records had no prediction (`missing`),
so a short predictions file can never pass for a full one.

Joins in compat mode: ScienceQA, TextVQA and GQA look predictions up in the official files; VQAv2 joins on
`str(question_id)` (as published); VizWiz, Grounding and OCRVQA join on the id too (the scoring spec does not
say otherwise; an unknown id is an error, as a KeyError was in the reference); ImageNet pairs by position.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sefe.coin import layout
from sefe.coin.records import TestField, TestRecord, answer_fields
from sefe.coin.root_tasks import find_task
from sefe.coin.tasks import COIN_TASK_NAMES, ScorerName, TaskError, TaskSpec, get_task
from sefe.evaluation.loading import (
    Prediction,
    ScoringError,
    load_gqa_gt,
    load_predictions,
    load_scienceqa_gt,
    load_test_records,
    load_textvqa_gt,
    require_field,
)
from sefe.evaluation.normalize import normalize_answer

Mode = Literal["compat", "fixed"]
TASKS: tuple[str, ...] = COIN_TASK_NAMES  # one scorer per CoIN task
SCIENCEQA_OPTIONS: tuple[str, ...] = ("A", "B", "C", "D", "E")
SCIENCEQA_LEGACY = "coin-legacy"
_MISSING_NOTE = "{n} test record(s) have no prediction; "


class ScoreResult(BaseModel):
    """One task's score. `accuracy` is a percentage; `correct` is fractional for TextVQA's soft accuracy."""

    model_config = ConfigDict(extra="forbid")

    task: str
    mode: Mode
    accuracy: float
    correct: float
    total: int  # the denominator actually used
    missing: int = 0  # test records with no prediction
    unknown_ids: list[str] = Field(default_factory=list)  # prediction ids not in the test set (not scored)
    duplicates: int = 0  # prediction lines repeating an earlier question_id
    variant: str | None = None
    gt_source: str = ""
    # scored without the official ground truth its published scorer reads (test.json's single answer):
    # not comparable with published numbers; reports print "approximate" next to the accuracy
    approximate: bool = False
    notes: list[str] = Field(default_factory=list)

    @property
    def shown_accuracy(self) -> str:
        return f"{self.accuracy:.2f}" + (" (approximate)" if self.approximate else "")


@dataclass
class _Ctx:
    task: str
    mode: Mode
    preds: list[Prediction]
    records: list[TestRecord]
    pred_path: Path
    ann_path: Path
    gt: Path | None
    variant: str | None
    notes: list[str] = field(default_factory=list)
    gt_source: str = "test.json"

    def __post_init__(self) -> None:
        self.rec_by_id: dict[str, TestRecord] = {}
        for rec in self.records:
            self.rec_by_id.setdefault(rec.qid, rec)
        dup_tests = len(self.records) - len(self.rec_by_id)
        if dup_tests:
            self.notes.append(f"{dup_tests} test record(s) repeat an earlier question_id; the first is used")
        counts = Counter(p.qid for p in self.preds)
        self.duplicates = sum(c - 1 for c in counts.values())
        pred_ids = set(counts)
        self.unique: list[TestRecord] = list(self.rec_by_id.values())  # fixed mode scores each test id once
        self.missing = sum(1 for rec in self.unique if rec.qid not in pred_ids)

    def unknown_pred(self, p: Prediction, where: str) -> ScoringError:
        return ScoringError(
            f"{self.pred_path} line {p.line}: question_id {p.question_id!r} is not in {where} "
            f"(the {self.task} scorer cannot score it)"
        )

    def test_id_unknown(self, rec: TestRecord, where: str) -> ScoringError:
        return ScoringError(f"{self.ann_path} record {rec.index}: question_id {rec.qid!r} is not in {where}")

    def fixed_index(self) -> dict[str, Prediction]:
        """Predictions by id for fixed mode: a repeated id is an error (which answer would count?)."""
        out: dict[str, Prediction] = {}
        for p in self.preds:
            if p.qid in out:
                raise ScoringError(
                    f"{self.pred_path} line {p.line}: question_id {p.question_id!r} repeats line "
                    f"{out[p.qid].line}; fixed mode needs one prediction per question"
                )
            out[p.qid] = p
        return out

    def result(self, correct: float, total: int, unknown: list[str] | None = None) -> ScoreResult:
        if self.missing:
            how = (
                "compat divides by the predictions, as the published scorer does"
                if self.mode == "compat"
                else "fixed mode counts them wrong"
            )
            if self.variant == SCIENCEQA_LEGACY:
                how = "the coin-legacy variant counts them wrong"
            self.notes.append(_MISSING_NOTE.format(n=self.missing) + how)
        if self.duplicates and self.mode == "compat":
            self.notes.append(f"{self.duplicates} prediction line(s) repeat an earlier question_id")
        if unknown:
            self.notes.append(f"{len(unknown)} prediction id(s) are not in the test set and were not scored")
        if total == 0:
            self.notes.append("nothing to score: accuracy reported as 0")
        return ScoreResult(
            task=self.task,
            mode=self.mode,
            accuracy=100.0 * correct / total if total else 0.0,
            correct=correct,
            total=total,
            missing=self.missing,
            unknown_ids=unknown or [],
            duplicates=self.duplicates,
            variant=self.variant,
            gt_source=self.gt_source,
            approximate=self.gt is None and layout.needs_official_gt(self.task),
            notes=self.notes,
        )


_Scorer = Callable[[_Ctx], ScoreResult]
#: scorer name -> its function, filled by `@_scores(name)` on each (the names are sefe.coin's `ScorerName`)
_SCORERS: dict[ScorerName, _Scorer] = {}


def _scores(name: ScorerName) -> Callable[[_Scorer], _Scorer]:
    def register(fn: _Scorer) -> _Scorer:
        _SCORERS[name] = fn
        return fn

    return register


def _score_by_id(ctx: _Ctx, judge: Callable[[Prediction, TestRecord], bool]) -> ScoreResult:
    """The common shape: compat iterates the predictions (unknown id = error), fixed iterates the test set."""
    if ctx.mode == "compat":
        correct = 0
        for p in ctx.preds:
            rec = ctx.rec_by_id.get(p.qid)
            if rec is None:
                raise ctx.unknown_pred(p, str(ctx.ann_path))
            correct += judge(p, rec)
        return ctx.result(correct, len(ctx.preds))
    by_id = ctx.fixed_index()
    unknown = [q for q in by_id if q not in ctx.rec_by_id]
    correct = 0
    for rec in ctx.unique:
        found = by_id.get(rec.qid)
        correct += found is not None and judge(found, rec)
    return ctx.result(correct, len(ctx.unique), unknown)


# ---- ScienceQA ----------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # the `.` is the reference's: any one character
_OPTION_LINE = re.compile(r"^([A-E])\. ?(.*)$", re.MULTILINE)


def parse_scienceqa_letter(text: str) -> str:
    """Published rule: an exact letter, else `X. ...`, else a single `The answer is X.` match, else FAILED."""
    if text in SCIENCEQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def parse_scienceqa_letter_legacy(text: str) -> str:
    """CoIN's older rule: the exact letter or `X. ` prefix, else the first one-character word."""
    if text in SCIENCEQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    return next((w for w in text.split() if len(w) == 1), "FAILED")


def scienceqa_pred_index(letter: str, n_choices: int) -> int:
    """Letter -> option index, only among the problem's own choices (else -1: wrong)."""
    allowed = SCIENCEQA_OPTIONS[:n_choices]
    return allowed.index(letter) if letter in allowed else -1


def _sqa_from_record(ctx: _Ctx, rec: TestRecord) -> tuple[int, int]:
    """(answer index, number of choices) from a test record, when no official problems.json is given."""
    answer = str(require_field(ctx.ann_path, rec, "answer")).strip()
    options = _OPTION_LINE.findall(rec.text or "")
    n_choices = len(options) or len(SCIENCEQA_OPTIONS)
    if answer in SCIENCEQA_OPTIONS:
        return SCIENCEQA_OPTIONS.index(answer), n_choices
    letter = parse_scienceqa_letter(answer)
    if letter in SCIENCEQA_OPTIONS:
        return SCIENCEQA_OPTIONS.index(letter), n_choices
    for i, (_, opt_text) in enumerate(options):
        if opt_text.strip() == answer:
            return i, n_choices
    raise ScoringError(
        f"{ctx.ann_path} record {rec.index} (question_id {rec.qid!r}): field 'answer' {answer!r} is "
        "neither an option letter nor one of the options in 'text'"
    )


@_scores("ScienceQA")
def _score_scienceqa(ctx: _Ctx) -> ScoreResult:
    parse = parse_scienceqa_letter_legacy if ctx.variant == SCIENCEQA_LEGACY else parse_scienceqa_letter

    def ok(text: str, answer_idx: int, n_choices: int) -> bool:
        return scienceqa_pred_index(parse(text), n_choices) == answer_idx

    if ctx.gt is None:
        if ctx.variant == SCIENCEQA_LEGACY:
            raise ScoringError("the coin-legacy ScienceQA variant needs --gt (the official files)")
        gold = {rec.qid: _sqa_from_record(ctx, rec) for rec in ctx.unique}
        return _score_by_id(ctx, lambda p, rec: ok(p.text, *gold[rec.qid]))

    problems, test_split = load_scienceqa_gt(ctx.gt)
    ctx.gt_source = f"official: {ctx.gt}"

    def gold_of(pid: str) -> tuple[int, int]:
        prob = problems[pid]
        return prob["answer"], len(prob["choices"])

    if ctx.mode == "fixed":
        for rec in ctx.records:
            if rec.qid not in problems:
                raise ctx.test_id_unknown(rec, f"{ctx.gt}/problems.json")
        return _score_by_id(ctx, lambda p, rec: ok(p.text, *gold_of(rec.qid)))

    # compat: the reference keeps the last prediction per id, walks the official test split (a missing
    # problem scores wrong) and divides by the number of distinct prediction ids, ids outside the split
    # included; CoIN's older scorer divides by the whole split instead.
    by_id = {p.qid: p for p in ctx.preds}
    split = set(test_split)
    unknown = [q for q in by_id if q not in split]
    correct = sum(ok(by_id[pid].text, *gold_of(pid)) for pid in test_split if pid in by_id)
    total = len(test_split) if ctx.variant == SCIENCEQA_LEGACY else len(by_id)
    if unknown and ctx.variant != SCIENCEQA_LEGACY:
        ctx.notes.append(
            f"{len(unknown)} prediction id(s) outside the official test split count in the denominator, "
            "as in the published scorer"
        )
    return ctx.result(correct, total, unknown)


# ---- TextVQA ------------------------------------------------------------------------------------------


def textvqa_answer_scores(raw_answers: list[str]) -> dict[str, float]:
    """Soft score of every distinct normalised answer: mean over the humans of min(1, others agreeing / 3)."""
    answers = [normalize_answer(a) for a in raw_answers]
    scores: dict[str, float] = {}
    for u in set(answers):
        accs = []
        for i in range(len(answers)):
            agree = sum(1 for j, a in enumerate(answers) if j != i and a == u)
            accs.append(min(1.0, agree / 3))
        scores[u] = sum(accs) / len(accs)
    return scores


def textvqa_score(pred_text: str, raw_answers: list[str]) -> float:
    return textvqa_answer_scores(raw_answers).get(normalize_answer(pred_text), 0.0)


@_scores("TextVQA")
def _score_textvqa(ctx: _Ctx) -> ScoreResult:
    if ctx.gt is None:
        answers = {rec.qid: [str(require_field(ctx.ann_path, rec, "answer"))] * 10 for rec in ctx.unique}
        where = str(ctx.ann_path)
    else:
        answers = load_textvqa_gt(ctx.gt)
        ctx.gt_source = f"official: {ctx.gt}"
        where = str(ctx.gt)
        odd = sum(1 for a in answers.values() if len(a) != 10)
        if odd:
            ctx.notes.append(f"{odd} ground-truth question(s) do not have exactly 10 answers")
    if ctx.mode == "compat":
        correct = 0.0
        for p in ctx.preds:
            if p.qid not in answers:
                raise ctx.unknown_pred(p, where)
            correct += textvqa_score(p.text, answers[p.qid])
        return ctx.result(correct, len(ctx.preds))
    for rec in ctx.unique:
        if rec.qid not in answers:
            raise ctx.test_id_unknown(rec, where)
    by_id = ctx.fixed_index()
    correct = sum(textvqa_score(by_id[r.qid].text, answers[r.qid]) for r in ctx.unique if r.qid in by_id)
    return ctx.result(correct, len(ctx.unique), [q for q in by_id if q not in ctx.rec_by_id])


# ---- ImageNet -----------------------------------------------------------------------------------------


@_scores("ImageNet")
def _score_imagenet(ctx: _Ctx) -> ScoreResult:
    if ctx.mode == "fixed":

        def judge(p: Prediction, rec: TestRecord) -> bool:
            pred = p.text.strip().casefold()
            gold = str(require_field(ctx.ann_path, rec, "answer")).strip().casefold()
            return bool(pred) and (gold in pred or pred in gold)

        return _score_by_id(ctx, judge)
    # compat: aligned by POSITION; plain case-sensitive substring either way (empty prediction = correct)
    if len(ctx.preds) > len(ctx.records):
        raise ScoringError(
            f"{ctx.pred_path}: {len(ctx.preds)} predictions for {len(ctx.records)} test records in "
            f"{ctx.ann_path}; ImageNet compat aligns by position and cannot place the extra lines"
        )
    correct = shifted = 0
    for p, rec in zip(ctx.preds, ctx.records, strict=False):
        gold = str(require_field(ctx.ann_path, rec, "answer"))
        correct += gold in p.text or p.text in gold
        shifted += p.qid != rec.qid
    if shifted:
        ctx.notes.append(
            f"{shifted} prediction(s) sit at a position whose test record has another question_id "
            "(compat aligns by position, as published; use --mode fixed to align by id)"
        )
    ctx.missing = len(ctx.records) - len(ctx.preds)
    return ctx.result(correct, len(ctx.preds))


# ---- GQA ----------------------------------------------------------------------------------------------


def _gqa_compat_norm(text: str) -> str:
    """LLaVA's GQA conversion: strip trailing periods, lowercase (spaces are kept)."""
    return text.rstrip(".").lower()


def _gqa_fixed_norm(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


@_scores("GQA")
def _score_gqa(ctx: _Ctx) -> ScoreResult:
    compat_norm, fixed_norm = _gqa_compat_norm, _gqa_fixed_norm
    norm = compat_norm if ctx.mode == "compat" else fixed_norm
    if ctx.gt is None:
        ctx.notes.append("no official GQA file: every test record counts (no isBalanced filter)")
        return _score_by_id(
            ctx, lambda p, rec: norm(p.text) == str(require_field(ctx.ann_path, rec, "answer")).lower()
        )
    questions = load_gqa_gt(ctx.gt)
    ctx.gt_source = f"official: {ctx.gt}"

    def balanced(qid: str) -> bool:
        flag = questions[qid].get("isBalanced")
        if not isinstance(flag, bool):
            raise ScoringError(f"{ctx.gt} question {qid!r}: field 'isBalanced' must be true or false")
        return flag

    if ctx.mode == "compat":
        # the reference turns the predictions into a dict by id first: a repeated id counts once (last line)
        by_id = {p.qid: p for p in ctx.preds}
        correct = total = 0
        for p in by_id.values():
            if p.qid not in questions:
                raise ctx.unknown_pred(p, str(ctx.gt))
            if balanced(p.qid):
                total += 1
                correct += compat_norm(p.text) == questions[p.qid]["answer"]
        if total < len(by_id):
            skipped = len(by_id) - total
            ctx.notes.append(f"{skipped} prediction(s) are on unbalanced questions (not counted)")
        return ctx.result(correct, total)
    for rec in ctx.unique:
        if rec.qid not in questions:
            raise ctx.test_id_unknown(rec, str(ctx.gt))
    by_id = ctx.fixed_index()
    scored = [r for r in ctx.unique if balanced(r.qid)]
    correct = sum(
        1
        for r in scored
        if r.qid in by_id and fixed_norm(by_id[r.qid].text) == questions[r.qid]["answer"].lower()
    )
    return ctx.result(correct, len(scored), [q for q in by_id if q not in ctx.rec_by_id])


# ---- VizWiz, VQAv2, OCRVQA ----------------------------------------------------------------------------


def _upper_equal(ctx: _Ctx) -> Callable[[Prediction, TestRecord], bool]:
    strip = ctx.mode == "fixed"

    def judge(p: Prediction, rec: TestRecord) -> bool:
        pred, gold = p.text, str(require_field(ctx.ann_path, rec, "answer"))
        if strip:
            pred, gold = pred.strip(), gold.strip()
        return pred.upper() == gold.upper()

    return judge


@_scores("VizWiz")
def _score_vizwiz(ctx: _Ctx) -> ScoreResult:
    return _score_by_id(ctx, _upper_equal(ctx))


@_scores("VQAv2")
def _score_vqav2(ctx: _Ctx) -> ScoreResult:
    return _score_by_id(ctx, _upper_equal(ctx))


@_scores("OCRVQA")
def _score_ocrvqa(ctx: _Ctx) -> ScoreResult:
    strip = ctx.mode == "fixed"

    def judge(p: Prediction, rec: TestRecord) -> bool:
        if "Unanswerable" in p.text:
            return False
        pred, gold = p.text, str(require_field(ctx.ann_path, rec, "answer"))
        if strip:
            pred, gold = pred.strip(), gold.strip()
        return pred.lower() == gold.lower()

    return _score_by_id(ctx, judge)


# ---- Grounding ----------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")


def parse_box_gt(text: str) -> list[float] | None:
    """Ground truth: drop the brackets, split on commas, float."""
    try:
        vals = [float(x) for x in text.replace("[", "").replace("]", "").split(",")]
    except ValueError:
        return None
    return vals if len(vals) == 4 else None


def parse_box_compat(text: str) -> list[float] | None:
    """Published prediction parse: drop the brackets, then the first and last character (the quirk)."""
    inner = text.replace("[", "").replace("]", "")[1:-1]
    try:
        vals = [float(x) for x in inner.split(",")]
    except ValueError:
        return None
    return vals if len(vals) == 4 else None


def parse_box_fixed(text: str) -> list[float] | None:
    """Corrected parse: the four numbers of the first bracketed group (or of the whole text), untruncated."""
    m = _BRACKETED.search(text)
    vals = [float(x) for x in _NUMBER.findall(m.group(1) if m else text)]
    return vals if len(vals) == 4 else None


def box_iou(a: list[float], b: list[float], clip_areas: bool = False) -> float:
    """IoU of two `[x1, y1, x2, y2]` boxes; 0 when the union is not positive.

    The published scorer takes areas as signed products, so an inverted box has a negative area;
    `clip_areas` (fixed mode) treats it as empty instead.
    """
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    if clip_areas:
        area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
        area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


@_scores("Grounding")
def _score_grounding(ctx: _Ctx) -> ScoreResult:
    fixed = ctx.mode == "fixed"
    parse_pred = parse_box_fixed if fixed else parse_box_compat

    def judge(p: Prediction, rec: TestRecord) -> bool:
        gold_text = str(require_field(ctx.ann_path, rec, "answer_bbox"))
        gold = parse_box_gt(gold_text)
        if gold is None:
            raise ScoringError(
                f"{ctx.ann_path} record {rec.index} (question_id {rec.qid!r}): field 'answer_bbox' "
                f"{gold_text!r} is not four comma-separated numbers"
            )
        pred = parse_pred(p.text)
        if pred is None:
            return False
        size = rec.size if fixed and rec.size else require_field(ctx.ann_path, rec, "size")
        scale = max(size) if size else 1.0
        return box_iou([v * scale for v in pred], [v * scale for v in gold], clip_areas=fixed) > 0.5

    return _score_by_id(ctx, judge)


def _spec(task: str, root: Path | str | None) -> TaskSpec:
    try:
        return find_task(task, root)
    except TaskError:
        where = f" (nor does {layout.tasks_file(Path(root))} declare it)" if root is not None else ""
        raise ScoringError(f"no scorer for task {task!r}; CoIN tasks: {', '.join(TASKS)}{where}") from None


def canonical_task(task: str, root: Path | str | None = None) -> ScorerName:
    """The CoIN scorer of a task (any case; a data root's `tasks.json` tasks too), or fail listing them."""
    spec = _spec(task, root)
    if spec.scorer is None:
        raise ScoringError(f"task {spec.name!r} names no CoIN scorer; CoIN scorers: {', '.join(TASKS)}")
    return spec.scorer


def default_annotations(data_root: Path, task: str) -> Path:
    """`<data_root>/annotations/<Task>/test.json`."""
    return layout.evaluation_file(Path(data_root), _spec(task, data_root).name)


def scoring_fields(scorer: str, official: bool) -> tuple[TestField, ...]:
    """Test-record fields a CoIN scorer reads: none besides the id with official ground truth."""
    name = canonical_task(scorer)
    if official and layout.needs_official_gt(name):
        return ()
    return answer_fields(get_task(name).answer)


def find_gt(
    data_root: Path | None, task: str, mode: Mode = "compat", allow_approximate: bool = False
) -> Path | None:
    """The official ground truth of `task` under `data_root`: where the release reads it, then `eval_gt/`.

    None for tasks scored from test.json alone. When the files are not there: in compat mode an error naming
    every path looked for, unless `allow_approximate` (then None: scored from test.json, marked approximate);
    fixed mode approximates with a note, as it always did.
    """
    name = canonical_task(task, data_root)
    if not layout.needs_official_gt(name):
        return None
    hint = "give --gt (tasks[].gt in a run config) or allow the approximation with --allow-approximate"
    if data_root is None:
        if mode == "compat" and not allow_approximate:
            raise ScoringError(
                f"{name}: compat scoring needs the official ground truth and no data root is known; {hint}"
            )
        return None
    try:
        found = layout.find_official_gt(Path(data_root), name)
    except layout.GroundTruthNotFound as exc:
        if mode == "compat" and not allow_approximate:
            raise ScoringError(f"{exc}; {hint} (eval.allow_approximate in a run config)") from None
        return None
    return found.path if found is not None else None


def score_in_root(
    task: str,
    predictions: Path,
    *,
    data_root: Path | None = None,
    annotations: Path | None = None,
    gt: Path | None = None,
    mode: Mode = "compat",
    variant: str | None = None,
    allow_approximate: bool = False,
) -> ScoreResult:
    """`sefe eval score`: test.json and official ground truth from the data root unless given explicitly.

    The root is `data_root`, else the one `annotations` sits in (`<root>/annotations/<Task>/test.json`).
    """
    root = data_root if data_root is not None else layout.root_of_annotations(annotations)
    if annotations is None:
        if root is None:
            raise ScoringError("give --data-root (annotations and ground truth are found in it) or -a")
        annotations = default_annotations(root, task)
    if gt is None:
        gt = find_gt(root, task, mode, allow_approximate)
    return score_predictions(
        task, predictions, annotations, gt=gt, mode=mode, variant=variant, data_root=root
    )


def score_predictions(
    task: str,
    predictions: Path,
    annotations: Path,
    gt: Path | None = None,
    mode: Mode = "compat",
    variant: str | None = None,
    data_root: Path | None = None,
) -> ScoreResult:
    """Score one CoIN prediction JSONL against its `test.json` (and the official ground truth, if given).

    `variant="coin-legacy"` (ScienceQA, compat only) applies CoIN's older scorer: first one-character word
    fallback and the whole official test split as the denominator. The task's scorer is looked up in
    `data_root` (default: the root `annotations` sits in), whose `tasks.json` may declare the task.
    """
    root = data_root if data_root is not None else layout.root_of_annotations(Path(annotations))
    name = canonical_task(task, root)
    if mode not in ("compat", "fixed"):
        raise ScoringError(f"unknown scoring mode {mode!r}: use 'compat' or 'fixed'")
    if variant is not None and (name != "ScienceQA" or variant != SCIENCEQA_LEGACY or mode != "compat"):
        raise ScoringError(f"variant {variant!r} exists only as ScienceQA compat '{SCIENCEQA_LEGACY}'")
    ctx = _Ctx(
        task=name,
        mode=mode,
        preds=load_predictions(Path(predictions)),
        records=load_test_records(Path(annotations), require=scoring_fields(name, official=gt is not None)),
        pred_path=Path(predictions),
        ann_path=Path(annotations),
        gt=Path(gt) if gt is not None else None,
        variant=variant,
    )
    if ctx.gt is None and layout.needs_official_gt(name):
        ctx.notes.append(
            f"no official {name} ground truth given: scored against the test.json 'answer' field, "
            "so the number is not comparable with published ones"
        )
    return _SCORERS[name](ctx)
