"""confidence_measures / fit_calibrators: the measures of paper Table 2, defined once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from hemalens.engine.calibrate import (
    MEASURES,
    StdConfidence,
    calibration_errors,
    confidence_measures,
    fit_calibrators,
    mc_dropout_probs,
    mc_summary,
    predict_logits,
)


def _mc_example():
    """Two cells, three passes, three classes; cell 0's median and mean disagree."""
    p = np.array(
        [
            [[0.50, 0.45, 0.05], [0.2, 0.7, 0.1]],
            [[0.10, 0.46, 0.44], [0.3, 0.6, 0.1]],
            [[0.52, 0.47, 0.01], [0.1, 0.8, 0.1]],
        ]
    )
    return p


def test_every_measure_by_hand():
    z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    p = _mc_example()
    std_map = StdConfidence.from_dict({"kind": "isotonic_std", "std": [0.0, 0.5],
                                       "confidence": [1.0, 0.0]})
    m = confidence_measures(z, p, np.array([0, 0]), temperature=2.0, mc_temperature=0.5,
                            std_map=std_map)
    assert list(m) == list(MEASURES)
    sm = softmax(z, axis=1)
    np.testing.assert_array_equal(m["freq"]["pred"], [0, 1])
    np.testing.assert_allclose(m["freq"]["confidence"], sm.max(1))
    np.testing.assert_array_equal(m["freq_ts"]["pred"], [0, 1])
    np.testing.assert_allclose(m["freq_ts"]["confidence"], softmax(z / 2, axis=1).max(1))
    mean = p.mean(0)  # cell 0: [0.373, 0.46, 0.167] -> class 1
    np.testing.assert_array_equal(m["mc_mean"]["pred"], [1, 1])
    np.testing.assert_allclose(m["mc_mean"]["confidence"], mean.max(1))
    ts = mean**2 / (mean**2).sum(1, keepdims=True)  # T = 0.5: p**(1/T) renormalised
    np.testing.assert_allclose(m["mc_mean_ts"]["confidence"], ts.max(1))
    med = np.median(p, 0)  # cell 0: [0.50, 0.46, 0.05] -> class 0
    med /= med.sum(1, keepdims=True)
    np.testing.assert_array_equal(m["mc_median"]["pred"], [0, 1])
    np.testing.assert_allclose(m["mc_median"]["confidence"], med.max(1))
    # mc_std: MC-mean class, confidence = map(std of that class) = 1 - 2 * std here
    std = p.std(0)[[0, 1], [1, 1]]
    np.testing.assert_array_equal(m["mc_std"]["pred"], [1, 1])
    np.testing.assert_allclose(m["mc_std"]["confidence"], 1 - 2 * std)
    # labels give "correct" for every measure
    assert m["freq"]["correct"].tolist() == [True, False]
    assert m["mc_median"]["correct"].tolist() == [True, False]
    assert m["mc_mean"]["correct"].tolist() == [False, False]


def test_missing_inputs_omit_measures_and_summaries_are_accepted():
    z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    p = _mc_example()
    assert list(confidence_measures(z)) == ["freq"]
    assert list(confidence_measures(None, p)) == ["mc_mean", "mc_median"]
    assert list(confidence_measures(z, p, std_map=StdConfidence())) == [
        "freq", "mc_mean", "mc_median"]  # an unfitted map is no map
    a = confidence_measures(None, p, mc_temperature=1.3)
    b = confidence_measures(None, mc_summary(p), mc_temperature=1.3)
    for name in a:
        np.testing.assert_allclose(a[name]["confidence"], b[name]["confidence"])
    with pytest.raises(ValueError, match="differ in cells"):
        confidence_measures(z[:1], p)
    with pytest.raises(ValueError, match="labels must have shape"):
        confidence_measures(z, labels=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="lacks"):
        confidence_measures(None, {"mean": p.mean(0)})


def _overconfident(n: int, seed: int, k: int = 4, temp: float = 2.5):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    y = (softmax(z, axis=1).cumsum(1) > rng.random((n, 1))).argmax(1)
    # fake MC passes: noisy copies of the over-confident logits
    passes = softmax(temp * z[None] + rng.normal(0, 1.0, (30, n, k)), axis=2)
    return temp * z, passes, y


def test_calibrators_fitted_on_validation_lower_the_test_ece():
    z_val, p_val, y_val = _overconfident(4000, 0)
    z_test, p_test, y_test = _overconfident(4000, 1)
    cal = fit_calibrators(z_val, p_val, y_val)
    assert cal["temperature"] == pytest.approx(2.5, abs=0.15)
    assert cal["mc_temperature"] > 1.5
    assert isinstance(cal["std_map"], StdConfidence) and cal["std_map"].fitted
    m = confidence_measures(z_test, p_test, y_test, **cal)
    assert list(m) == list(MEASURES)
    ece = {k: calibration_errors(v["confidence"], v["correct"])[0] for k, v in m.items()}
    assert ece["freq_ts"] < 0.5 * ece["freq"]
    assert ece["mc_mean_ts"] < 0.5 * ece["mc_mean"]
    assert ece["mc_std"] < 0.05
    with pytest.raises(ValueError, match="labels"):
        fit_calibrators(z_val)


def test_end_to_end_with_lenet5():
    models = pytest.importorskip("hemalens.engine.models")
    torch.manual_seed(0)
    model = models.build_model(models.ModelSpec("lenet5", 4, 0.25, 32))
    x = np.random.default_rng(0).random((40, 50, 50), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 4, 40)
    logits = predict_logits(model, x)
    probs = mc_dropout_probs(model, x, passes=20)
    m = confidence_measures(logits, probs, y, **fit_calibrators(logits, probs, y))
    assert list(m) == list(MEASURES)
    for entry in m.values():
        assert entry["pred"].shape == entry["confidence"].shape == (40,)
        assert np.all((entry["confidence"] >= 0) & (entry["confidence"] <= 1))


def test_logit_spread_score_ranks_saturated_inputs_below_confident_in_distribution_ones():
    from hemalens.engine.calibrate import mc_softmax

    rng = np.random.default_rng(0)
    # cell 0: in distribution, moderate logits with small MC spread;
    # cell 1: far out of distribution, huge logits whose spread is large in absolute terms
    # although every pass gives the same, saturated class.
    logits = np.stack([
        np.c_[rng.normal(4, 0.3, 200), rng.normal(0, 0.3, 200)],
        np.c_[rng.normal(80, 10.0, 200), rng.normal(0, 10.0, 200)],
    ], axis=1)  # (T, N=2, K=2)
    probs = mc_softmax(logits)
    m = confidence_measures(None, probs, mc_logits=logits)
    assert m["mc_mean"]["confidence"][1] > m["mc_mean"]["confidence"][0]  # softmax is fooled
    assert m["mc_logit_std"]["confidence"][1] < m["mc_logit_std"]["confidence"][0]
    assert list(m["mc_logit_std"]["pred"]) == [0, 0]
    with pytest.raises(ValueError, match="mc_logits"):
        confidence_measures(None, probs, mc_logits=logits[:, :1])
