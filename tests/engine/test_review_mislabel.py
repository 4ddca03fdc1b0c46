"""Mislabel queue and its metrics, exact on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hemalens.engine.review.mislabel import mislabel_queue, queue_metrics


def test_queue_selects_and_ranks_exactly():
    #                 0     1     2     3     4     5     6     7     8     9
    pred = np.array([1, 0, 2, 2, 3, 1, 0, 2, 1, 3])
    given = np.array([0, 0, 1, 1, 3, -1, 1, 0, 2, 0])
    conf = np.array([0.97, 0.99, 0.95, 0.999, 0.99, 0.99, 0.94, 0.97, np.nan, 0.97])
    # disagreeing with a label: 0, 2, 3, 6, 7, 8, 9 (5 has none, 1 and 4 agree)
    # of these >= 0.95: 0, 2, 3, 7, 9 (6 is 0.94, 8 NaN); ties 0/7/9 stay by index
    q = mislabel_queue(pred, conf, given)
    assert q.dtype == np.int64
    assert q.tolist() == [3, 0, 7, 9, 2]
    assert mislabel_queue(pred, conf, given, threshold=0.96).tolist() == [3, 0, 7, 9]
    assert mislabel_queue(pred, conf, given, threshold=0.9).tolist() == [3, 0, 7, 9, 2, 6]
    eligible = np.ones(10, bool)
    eligible[[0, 3]] = False
    assert mislabel_queue(pred, conf, given, eligible=eligible).tolist() == [7, 9, 2]


def test_queue_ties_are_stable_for_many_equal_confidences():
    n = 1000
    pred = np.ones(n, int)
    given = np.zeros(n, int)
    conf = np.full(n, 0.99)
    conf[::7] = 1.0
    q = mislabel_queue(pred, conf, given)
    expected = np.r_[np.arange(0, n, 7), np.setdiff1d(np.arange(n), np.arange(0, n, 7))]
    np.testing.assert_array_equal(q, expected)


def test_queue_errors_and_empty():
    assert mislabel_queue(np.zeros(0, int), np.zeros(0), np.zeros(0, int)).size == 0
    with pytest.raises(ValueError, match="confidence has shape"):
        mislabel_queue(np.zeros(3, int), np.zeros(2), np.zeros(3, int))
    with pytest.raises(ValueError, match="threshold"):
        mislabel_queue(np.zeros(3, int), np.zeros(3), np.zeros(3, int), threshold=1.5)
    with pytest.raises(ValueError, match="integer class codes"):
        mislabel_queue(np.zeros(3), np.zeros(3), np.zeros(3, int))


def test_queue_metrics_exact():
    truth = np.zeros(10, bool)
    truth[[2, 5, 7, 9]] = True  # k = 4 true contaminants
    queue = np.array([5, 1, 7, 2, 0, 3])  # found 5, 7, 2; first 4: 5, 1, 7, 2 -> 3 hits
    m = queue_metrics(queue, truth)
    assert m == {
        "queue_size": 6,
        "contaminants": 4,
        "found": 3,
        "precision": 0.5,
        "recall": 0.75,
        "precision_at_k": 0.75,
        "k": 4,
    }
    # a queue shorter than k: missing places count as misses
    m = queue_metrics(np.array([9, 4]), truth)
    assert (m["precision"], m["recall"], m["precision_at_k"]) == (0.5, 0.25, 0.25)


def test_queue_metrics_degenerate_and_errors():
    m = queue_metrics(np.zeros(0, int), np.zeros(5, bool))
    assert m["queue_size"] == 0 and m["k"] == 0
    assert all(math.isnan(m[k]) for k in ("precision", "recall", "precision_at_k"))
    m = queue_metrics(np.zeros(0, int), np.array([True, False]))
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["precision_at_k"] == 0.0
    with pytest.raises(ValueError, match="outside"):
        queue_metrics(np.array([5]), np.zeros(3, bool))
    with pytest.raises(ValueError, match="repeated"):
        queue_metrics(np.array([1, 1]), np.zeros(3, bool))


def test_queue_on_simulated_contaminants():
    # a calibrated classifier: right with probability = its confidence, labels 3 % wrong
    rng = np.random.default_rng(1)
    n, k = 20000, 4
    true = rng.integers(0, k, n)
    contaminant = rng.random(n) < 0.03
    given = np.where(contaminant, (true + rng.integers(1, k, n)) % k, true)
    conf = rng.uniform(0.3, 1.0, n)
    right = rng.random(n) < conf
    pred = np.where(right, true, (true + rng.integers(1, k, n)) % k)
    q = mislabel_queue(pred, conf, given)
    m = queue_metrics(q, contaminant)
    # among queued cells (conf >= 0.95 and pred != given), a contaminant is queued when the
    # model is right, a clean cell only when it errs: precision ~ 0.03*0.975 / (that + 0.97*0.025)
    p_true = 0.03 * 0.975
    expected = p_true / (p_true + 0.97 * 0.025)
    assert m["precision"] == pytest.approx(expected, abs=0.08)
    assert np.all(np.diff(conf[q]) <= 0)
