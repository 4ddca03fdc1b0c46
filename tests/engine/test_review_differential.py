"""Wilson intervals and the per-sample differential count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hemalens.engine.review.differential import differential_counts, wilson_interval


def wilson_by_quadratic(k, n, z=1.96):
    """Wilson's bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n (independent form)."""
    ph, c = k / n, z * z / n
    a, b, cc = 1 + c, -(2 * ph + c), ph * ph
    disc = math.sqrt(b * b - 4 * a * cc)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)), (10, 10, (0.7225, 1.0))],
)
def test_wilson_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=5e-5)
    assert hi == pytest.approx(expected[1], abs=5e-5)


def test_wilson_matches_quadratic_form_and_brackets_p_hat():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 5000))
        k = int(rng.integers(0, n + 1))
        z = float(rng.choice([1.0, 1.645, 1.96, 2.576]))
        lo, hi = wilson_interval(k, n, z)
        rlo, rhi = wilson_by_quadratic(k, n, z)
        assert lo == pytest.approx(max(rlo, 0.0), abs=1e-12)
        assert hi == pytest.approx(min(rhi, 1.0), abs=1e-12)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0


def test_wilson_edge_cases_and_errors():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    for k, n in [(3, 2), (-1, 5), (1, -1), (1.5, 4)]:
        with pytest.raises(ValueError):
            wilson_interval(k, n)
    with pytest.raises(ValueError, match="z must be"):
        wilson_interval(1, 2, z=0)


CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def test_differential_counts_by_hand():
    #            run A: 6 cells              | run B: 4 cells              | run C: 2 cells
    pred = np.array([0, 0, 1, 2, 2, 3] + [0, 1, 1, -1] + [2, 2])
    sample = np.array(["A"] * 6 + ["B"] * 4 + ["C"] * 2)
    qc_fail = np.zeros(12, bool)
    qc_fail[[5, 9]] = True  # one per run A and B; B's has no prediction (-1)
    ood = np.zeros(12, bool)
    ood[[4, 10, 11]] = True  # all of run C is out-of-distribution
    include = ~qc_fail & ~ood
    flagged = np.zeros(12, bool)
    flagged[[0, 5, 7]] = True  # cell 5 is excluded: not counted as flagged
    d = differential_counts(pred, sample, CLASSES, include=include, flagged=flagged,
                            excluded_reasons={"qc": qc_fail, "ood": ood})
    assert list(d) == ["A", "B", "C"]
    a = d["A"]  # counted: cells 0,1,2,3 -> lymph 2, mono 1, neutro 1, eos 0
    assert a["_total"] == 4 and a["_flagged"] == 1
    assert a["_excluded"] == {"qc": 1, "ood": 1}
    assert [a[c]["n"] for c in CLASSES] == [2, 1, 1, 0]
    assert [a[c]["percent"] for c in CLASSES] == [50.0, 25.0, 25.0, 0.0]
    lo, hi = wilson_interval(2, 4)
    assert a["lymphocyte"]["ci_low"] == pytest.approx(100 * lo)
    assert a["lymphocyte"]["ci_high"] == pytest.approx(100 * hi)
    assert a["eosinophil"]["ci_low"] == 0.0 and a["eosinophil"]["ci_high"] > 0
    b = d["B"]  # counted: 6, 7, 8 -> lymph 1, mono 2
    assert b["_total"] == 3 and b["_flagged"] == 1
    assert [b[c]["n"] for c in CLASSES] == [1, 2, 0, 0]
    assert b["monocyte"]["percent"] == pytest.approx(200 / 3)
    c = d["C"]  # nothing counted: n 0 and NaN, no division by zero
    assert c["_total"] == 0 and c["_excluded"] == {"qc": 0, "ood": 2}
    for name in CLASSES:
        assert c[name]["n"] == 0
        assert all(math.isnan(c[name][k]) for k in ("percent", "ci_low", "ci_high"))
    # percentages of a counted sample add up to 100
    assert sum(a[n]["percent"] for n in CLASSES) == pytest.approx(100.0)


def test_differential_defaults_and_errors():
    pred = np.array([0, 1, 1])
    d = differential_counts(pred, np.array(["s"] * 3), ["x", "y"], include=np.ones(3, bool))
    assert d["s"]["_flagged"] == 0 and d["s"]["_excluded"] == {}
    assert d["s"]["y"]["n"] == 2
    assert differential_counts(np.zeros(0, int), np.zeros(0, str), ["x"],
                               include=np.zeros(0, bool)) == {}
    with pytest.raises(ValueError, match="outside 0..1"):
        differential_counts(np.array([0, 2, 1]), np.array(["s"] * 3), ["x", "y"],
                            include=np.ones(3, bool))
    with pytest.raises(ValueError, match="sample has shape"):
        differential_counts(pred, np.array(["s"] * 2), ["x", "y"], include=np.ones(3, bool))
    with pytest.raises(ValueError, match="include must be boolean"):
        differential_counts(pred, np.array(["s"] * 3), ["x", "y"], include=np.full(3, 0.5))
    with pytest.raises(ValueError, match="unique"):
        differential_counts(pred, np.array(["s"] * 3), ["x", "x"], include=np.ones(3, bool))
