"""The std-based confidence: isotonic, non-increasing, calibrated, storable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from hemalens.engine.calibrate import StdConfidence, calibration_errors


def _synthetic(n: int, seed: int):
    """P(correct | s) = 1 - 1.6 s for s ~ U(0, 0.5): a known, decreasing truth."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 0.5, n)
    truth = 1 - 1.6 * s
    return s, rng.random(n) < truth, truth


def test_matches_sklearn_isotonic_and_is_non_increasing():
    s, correct, _ = _synthetic(3000, 0)
    m = StdConfidence().fit(s, correct)
    grid = np.linspace(-0.1, 0.7, 301)  # beyond the fitted range too (clipped)
    ref = IsotonicRegression(increasing=False, y_min=0, y_max=1, out_of_bounds="clip")
    ref.fit(s, correct.astype(float))
    np.testing.assert_allclose(m(grid), ref.predict(grid), atol=1e-12)
    assert np.all(np.diff(m(grid)) <= 1e-12)
    assert m(grid).min() >= 0 and m(grid).max() <= 1


def test_recovers_the_true_probability_and_calibrates_held_out_cells():
    s, correct, _ = _synthetic(20_000, 1)
    m = StdConfidence().fit(s, correct)
    grid = np.linspace(0.05, 0.45, 9)
    np.testing.assert_allclose(m(grid), 1 - 1.6 * grid, atol=0.05)
    s2, correct2, truth2 = _synthetic(20_000, 2)  # a held-out "test split"
    ece_fit, _ = calibration_errors(m(s2), correct2)
    ece_truth, _ = calibration_errors(truth2, correct2)
    assert ece_fit < 0.02 and ece_fit < ece_truth + 0.01


def test_round_trip_through_json():
    s, correct, _ = _synthetic(500, 3)
    m = StdConfidence().fit(s, correct)
    d = json.loads(json.dumps(m.to_dict()))
    back = StdConfidence.from_dict(d)
    x = np.linspace(0, 0.6, 50)
    np.testing.assert_array_equal(back(x), m(x))
    assert back.fitted and "thresholds" in repr(back)


def test_constant_std_gives_the_overall_accuracy():
    m = StdConfidence().fit(np.full(4, 0.1), np.array([1, 1, 1, 0]))
    np.testing.assert_allclose(m(np.array([0.0, 0.1, 0.3])), 0.75)


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        StdConfidence()(np.array([0.1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        StdConfidence().to_dict()
    with pytest.raises(ValueError, match="at least one"):
        StdConfidence().fit([], [])
    with pytest.raises(ValueError, match="differ in length"):
        StdConfidence().fit([0.1, 0.2], [True])
    with pytest.raises(ValueError, match=">= 0"):
        StdConfidence().fit([0.1, -0.2], [True, False])
    with pytest.raises(ValueError, match="boolean or 0/1"):
        StdConfidence().fit([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="kind"):
        StdConfidence.from_dict({"kind": "other"})
    with pytest.raises(ValueError, match="malformed"):
        StdConfidence.from_dict({"kind": "isotonic_std", "std": [0.2, 0.1], "confidence": [1, 1]})
