from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sefe.asd_gen.candidates import AnswerPool, BoxPool, ClassPool, normalize_answer, wrong_options
from sefe.asd_gen.styles.boxes import format_box, iou, parse_box, perturbed_box
from sefe.asd_gen.styles.rng import seeded_rng

coord = st.floats(0, 1, allow_nan=False)


@st.composite
def boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x1, x2 = sorted((draw(coord), draw(coord)))
    y1, y2 = sorted((draw(coord), draw(coord)))
    return parse_box(format_box((x1, y1, x2, y2)))  # type: ignore[return-value]


@given(target=boxes(), others=st.lists(boxes(), max_size=6), seed=st.integers(0, 10**6))
def test_box_distractors_are_distinct_and_iou_below_half(target, others, seed) -> None:  # type: ignore[no-untyped-def]
    pool = BoxPool()
    for b in [target, *others]:
        pool.add("img.jpg", format_box(b))
    got = pool.draw("img.jpg", target, 3, seeded_rng(seed))
    assert len(got) == 3 and len(set(got)) == 3 and format_box(target) not in got
    for s in got:
        b = parse_box(s)
        assert b is not None and iou(b, target) < 0.5 and all(0 <= v <= 1 for v in b)


@given(target=boxes(), seed=st.integers(0, 10**6))
def test_perturbed_box_is_valid(target, seed) -> None:  # type: ignore[no-untyped-def]
    b = perturbed_box(target, seeded_rng(seed))
    assert iou(b, target) < 0.5 and b[0] < b[2] and b[1] < b[3]


def test_other_boxes_of_the_image_come_first() -> None:
    pool = BoxPool()
    for s in ("[0.00, 0.00, 0.20, 0.20]", "[0.70, 0.70, 0.90, 0.90]", "[0.01, 0.01, 0.21, 0.21]"):
        pool.add("a.jpg", s)
    pool.add("b.jpg", "[0.40, 0.40, 0.60, 0.60]")
    got = pool.draw("a.jpg", (0.0, 0.0, 0.2, 0.2), 1, seeded_rng(1))
    assert got == ["[0.70, 0.70, 0.90, 0.90]"]  # the near-duplicate (IoU > 0.5) and other images never used


def test_class_pool_excludes_the_answer_in_any_case() -> None:
    pool = ClassPool(["Tabby cat", "tabby cat", "Banana", "Violin", "Fire truck"])
    for seed in range(20):
        got = pool.draw("Tabby Cat.", 3, seeded_rng(seed))
        assert len(got) == 3 and "tabby cat" not in {normalize_answer(g) for g in got}


def test_scienceqa_wrong_options() -> None:
    assert wrong_options(["a", "b", "c"], 1) == ["a", "c"]


def test_pool_uses_answers_of_the_same_kind() -> None:
    pool = AnswerPool()
    for q, a in [
        ("What color is the car?", "blue"),
        ("What color is the sky?", "gray"),
        ("What color is the cat?", "black"),
        ("What color is it?", "green"),
        ("Who is it?", "man"),
        ("What is on the table?", "laptop"),
        ("How many cats?", "2"),
        ("How many dogs?", "4"),
        ("Is it big?", "no"),
        ("Is it red?", "yes"),
    ]:
        pool.add(q, a)
    for seed in range(10):
        got = pool.draw("What color is the bus?", "Red", 3, seeded_rng(seed))
        assert set(got) <= {"blue", "gray", "black", "green"} and len(got) == 3
        assert pool.draw("Is the bus red?", "Yes", 1, seeded_rng(seed)) == ["no"]
        assert set(pool.draw("How many buses?", "3", 2, seeded_rng(seed))) == {"2", "4"}
    # too few of the kind: backs off to the whole task, still distinct and never the answer
    got = pool.draw("Who is it?", "woman", 3, seeded_rng(0))
    assert len(set(got)) == 3 and "woman" not in got


answers = st.text(alphabet="abcdeRGB 0123.,", min_size=1, max_size=6)


@given(
    data=st.lists(
        st.tuples(st.sampled_from(["What color is it?", "How many?", "Is it?", "Who?"]), answers),
        min_size=1,
        max_size=40,
    ),
    question=st.sampled_from(["What color is the car?", "How many cars?", "Is it red?", "Where?"]),
    correct=answers,
    k=st.integers(1, 3),
    seed=st.integers(0, 10**6),
)
def test_pool_draws_are_distinct_and_never_the_answer(data, question, correct, k, seed) -> None:  # type: ignore[no-untyped-def]
    pool = AnswerPool()
    for q, a in data:
        pool.add(q, a)
    got = pool.draw(question, correct, k, seeded_rng(seed))
    norms = [normalize_answer(g) for g in got]
    assert len(got) <= k and len(set(norms)) == len(norms) and normalize_answer(correct) not in norms
    assert all(norms)
    available = {normalize_answer(a) for _, a in data} - {normalize_answer(correct), ""}
    assert len(got) == min(k, len(available))  # backs off until it has k, or the task has no more
    assert got == pool.draw(question, correct, k, seeded_rng(seed))  # seeded
