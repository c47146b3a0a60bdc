"""Interval arithmetic by hand, verdicts from intervals, retention, the endpoints paired by seed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from sefe.micro.endpoints import PRIMARY, compare, value
from sefe.micro.stats import Interval, bootstrap_items, paired_t, retention, t975, verdict


def test_paired_t_interval_by_hand() -> None:
    # differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5) = 1.5811, se 0.7071, t(0.975, 4) = 2.776
    iv = paired_t([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    assert iv.mean == 3 and iv.n == 5 and iv.sd == pytest.approx(math.sqrt(2.5))
    assert iv.low == pytest.approx(3 - 2.776 * 0.70711, abs=1e-4) and iv.high == pytest.approx(
        4.963, abs=1e-3
    )
    # three seeds, the README's knowledge-probe BWT kind of spread: +7.3 mean is not enough
    iv3 = paired_t([-5.1, -5.5, -5.3], [-6.0, -19.5, -12.6])
    assert iv3.mean == pytest.approx(7.4) and iv3.low is not None and iv3.low < 0 < iv3.high
    assert verdict(iv3) == "not established"
    one = paired_t([3.0], [1.0])
    assert one.mean == 2 and one.low is None and verdict(one) == "not established"
    with pytest.raises(ValueError):
        paired_t([1.0, 2.0], [1.0])


def test_t_quantiles_table_and_expansion() -> None:
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(60) == pytest.approx(2.000, abs=1e-3) and t975(120) == pytest.approx(1.980, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_verdict_is_read_from_the_interval_only() -> None:
    assert verdict(Interval(mean=5, low=0.1, high=9.9, n=5)) == "reproduces"
    assert verdict(Interval(mean=-5, low=-9.9, high=-0.1, n=5)) == "does not reproduce"
    assert verdict(Interval(mean=5, low=-0.1, high=10, n=5)) == "not established"
    assert verdict(Interval(mean=-5, low=-9.9, high=-0.1, n=5), expect_positive=False) == "reproduces"


def test_retention_counts_only_learned_tasks() -> None:
    assert retention(final=60.0, own=100.0, base=20.0) == pytest.approx(0.5)  # (60-20)/(100-20)
    assert retention(final=20.0, own=90.0, base=20.0) == 0.0
    assert retention(final=40.0, own=49.0, base=20.0) is None  # 29 points above base: not learned enough
    assert retention(final=None, own=90.0, base=20.0) is None


def test_bootstrap_over_items_is_seeded_and_brackets_the_difference() -> None:
    a = np.array([1] * 70 + [0] * 30, dtype=float)  # 70 %
    b = np.array([1] * 50 + [0] * 50, dtype=float)  # 50 % on the same 100 items

    def diff(draws: list[Any]) -> Any:
        return 100 * (a[draws[0]].mean(axis=1) - b[draws[0]].mean(axis=1))

    low, high = bootstrap_items([100], diff, reps=500, seed=1)
    assert (low, high) == bootstrap_items([100], diff, reps=500, seed=1)
    assert 5 < low < 20 < high < 35  # paired items: se of the difference = sqrt(0.2 / 100) ~ 4.5 points


def _items(own: float, final: float, n: int = 100) -> dict[str, Any]:
    """Item outcomes of a two-task run: task 0 known at rate `own` after its stage, `final` after stage 2."""

    def flags(rate: float) -> list[int]:
        k = round(rate * n / 100)
        return [1] * k + [0] * (n - k)

    cells = {(0, 0): flags(own), (1, 0): flags(final), (1, 1): flags(90)}
    return {"FE": {(0, 0): flags(0), (1, 0): flags(final / 2), (1, 1): flags(0)}, "K": cells, "L": cells}


def test_endpoints_pair_arms_by_seed_and_word_the_finding_from_the_interval() -> None:
    base = [20.0, 20.0]
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    items: dict[tuple[str, int], Any] = {}
    for seed, (kept_lora, kept_sefe) in enumerate([(30, 60), (35, 62), (28, 58)]):
        for group, final in (("lora/asd", kept_lora), ("reglora/asd", kept_sefe)):
            it = _items(own=100, final=final)
            items[(group, seed)] = it
            runs[(group, seed)] = {"metrics": {m: value(m, it, 2, base) for m in ("rho_K", "rho_L")}}
    assert runs[("reglora/asd", 0)]["metrics"]["rho_K"] == pytest.approx((60 - 20) / 80)
    rho_k = next(ep for ep in PRIMARY if ep.metric == "rho_K" and not ep.control)
    res = compare(rho_k, runs, items, [100, 100], base, reps=300)
    assert res is not None and res.seeds == [0, 1, 2]
    assert res.t.mean == pytest.approx(((30 + 27 + 30) / 3) / 80)
    assert res.verdict == "reproduces" and "reproduces" in res.text and "95 % CI" in res.text
    assert res.bootstrap is not None and res.bootstrap[0] < res.t.mean < res.bootstrap[1]
    # a task at its base after its own stage does not count: no retention, no comparison
    flat = {k: {"metrics": {"rho_K": value("rho_K", _items(own=40, final=20), 2, base)}} for k in runs}
    assert all(r["metrics"]["rho_K"] is None for r in flat.values())
    assert compare(rho_k, flat, items, [100, 100], base) is None
    # the replay control is absent when replay was not run
    control = next(ep for ep in PRIMARY if ep.control)
    assert compare(control, runs, items, [100, 100], base) is None


def test_fe_later_held_counts_only_items_asked_with_a_held_out_line(tmp_path: Any) -> None:
    import math

    import orjson

    from sefe.micro.endpoints import _test_items, value

    for task in ("Colour", "Count"):
        folder = tmp_path / "annotations" / task
        folder.mkdir(parents=True)
        recs = [
            {
                "question_id": f"{task}{j}",
                "text": "q",
                "answer": "a",
                "instruction": ("trained", "held-out")[j % 2],
            }
            for j in range(4)
        ]
        (folder / "test.json").write_bytes(orjson.dumps(recs))
    assert _test_items(tmp_path, "Colour") == (
        ["Colour0", "Colour1", "Colour2", "Colour3"],
        [False, True, False, True],
    )
    # after stage 2, Colour's items: errors on both held-out items, none on the trained ones
    fe = {(0, 0): [0.0, 0.0, 0.0, 0.0], (1, 0): [0.0, 1.0, 0.0, 1.0], (1, 1): [1.0, 1.0, 1.0, 1.0]}
    nan = float("nan")
    held = {
        cell: [f if h else nan for f, h in zip(flags, _test_items(tmp_path, "Colour")[1], strict=True)]
        for cell, flags in fe.items()
    }
    items = {"FE": fe, "FE_held": held, "K": {}, "L": {}}
    assert value("FE_later", items, 2, [0.0, 0.0]) == 50.0  # all of Colour's items after stage 2
    assert value("FE_later_held", items, 2, [0.0, 0.0]) == 100.0  # only its held-out ones
    assert not any(math.isnan(v) for v in items["FE"][(1, 0)])


def test_bootstrap_drops_draws_where_the_difference_is_undefined() -> None:
    """A draw with no item of a kind (a held-out line in a tiny test) gives NaN: it is left out, not sorted
    into the interval's upper end."""
    import numpy as np

    from sefe.micro.stats import bootstrap_items

    def diff(draws: list[Any]) -> Any:
        out = np.ones(draws[0].shape[0])
        out[::2] = np.nan  # half the draws undefined
        return out

    assert bootstrap_items([10], diff, reps=100) == (1.0, 1.0)
    with pytest.raises(ValueError, match="no resampled difference"):
        bootstrap_items([10], lambda d: np.full(d[0].shape[0], np.nan), reps=10)
