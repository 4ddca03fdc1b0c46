"""ECE/MCE and reliability data: torchmetrics agreement, the bin convention, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from hemalens.engine.calibrate import bin_index, calibration_errors, reliability_data


def _torchmetrics(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[float, float]:
    p, y = torch.from_numpy(probs), torch.from_numpy(labels)
    k = probs.shape[1]
    return tuple(
        float(multiclass_calibration_error(p, y, num_classes=k, n_bins=n_bins, norm=norm))
        for norm in ("l1", "max")
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [10, 15, 3])
def test_agrees_with_torchmetrics_on_random_data(seed, n_bins):
    rng = np.random.default_rng(seed)
    n, k = 2000, 4
    # sharpened Dirichlet probabilities: confidences spread over (0.25, 1) but never 1.0
    probs = rng.dirichlet(np.full(k, 0.3), size=n).astype(np.float32)
    probs = np.clip(probs, 1e-4, None)
    probs /= probs.sum(1, keepdims=True)
    labels = rng.integers(0, k, n)
    labels[: n // 2] = probs[: n // 2].argmax(1)  # half right by construction
    conf = probs.max(1)
    assert conf.max() < 1.0
    ece, mce = calibration_errors(conf, probs.argmax(1) == labels, n_bins=n_bins)
    ref_ece, ref_mce = _torchmetrics(probs, labels, n_bins)
    assert ece == pytest.approx(ref_ece, abs=1e-6)
    assert mce == pytest.approx(ref_mce, abs=1e-6)


def test_torchmetrics_docstring_example():
    preds = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
                      [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]], dtype=np.float32)
    target = np.array([0, 1, 2, 0])
    conf, correct = preds.max(1), preds.argmax(1) == target
    ece, mce = calibration_errors(conf, correct, n_bins=3)
    assert ece == pytest.approx(0.2000, abs=5e-5)
    assert mce == pytest.approx(0.2333, abs=5e-5)
    assert (ece, mce) == pytest.approx(_torchmetrics(preds, target, 3), abs=1e-6)


def test_confidence_one_falls_in_the_last_bin():
    # our convention: [lo, hi) bins, the last one closed [0.9, 1.0]
    assert bin_index(np.array([0.0, 0.0999, 0.1, 0.5, 0.9, 0.95, 1.0]), 10).tolist() == [
        0, 0, 1, 5, 9, 9, 9]
    conf = np.array([1.0, 1.0, 0.92, 0.92])
    correct = np.array([True, False, True, True])
    rel = reliability_data(conf, correct, n_bins=10)
    assert rel["count"].tolist() == [0] * 9 + [4]
    assert rel["accuracy"][9] == pytest.approx(0.75)
    assert rel["confidence"][9] == pytest.approx(0.96)
    ece, mce = calibration_errors(conf, correct)
    assert ece == pytest.approx(0.21) and mce == pytest.approx(0.21)
    # torchmetrics puts 1.0 in an eleventh bin of its own: |0.5-1.0| and |1-0.92| -> MCE 0.5
    probs = np.stack([conf, 1 - conf], axis=1).astype(np.float32)
    labels = np.where(correct, 0, 1)
    ref_ece, ref_mce = _torchmetrics(probs, labels, 10)
    assert ref_mce == pytest.approx(0.5) and ref_ece == pytest.approx(0.5 * 0.5 + 0.5 * 0.08)
    assert mce != pytest.approx(ref_mce)


def test_reliability_data_by_hand():
    conf = np.array([0.05, 0.15, 0.18, 0.55, 0.95])
    correct = np.array([0, 1, 0, 1, 1])
    rel = reliability_data(conf, correct, n_bins=5)
    np.testing.assert_allclose(rel["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert rel["count"].tolist() == [3, 0, 1, 0, 1]
    np.testing.assert_allclose(rel["accuracy"], [1 / 3, np.nan, 1, np.nan, 1])
    np.testing.assert_allclose(rel["confidence"], [0.38 / 3, np.nan, 0.55, np.nan, 0.95])
    ece, mce = calibration_errors(conf, correct, n_bins=5)
    gaps = np.array([abs(1 / 3 - 0.38 / 3), 0.45, 0.05])
    assert ece == pytest.approx(np.sum(np.array([3, 1, 1]) / 5 * gaps))
    assert mce == pytest.approx(0.45)


def test_perfect_calibration_gives_zero():
    conf = np.array([0.75] * 4 + [0.25] * 4)
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    assert calibration_errors(conf, correct) == pytest.approx((0.0, 0.0))


@pytest.mark.parametrize(
    ("conf", "correct", "match"),
    [
        ([], [], "at least one"),
        ([0.5, 0.6], [True], "differ in length"),
        ([0.5, np.nan], [True, False], "NaN"),
        ([0.5, 1.2], [True, False], r"\[0, 1\]"),
        ([0.5, 0.6], [1, 2], "boolean or 0/1"),
    ],
)
def test_bad_inputs(conf, correct, match):
    with pytest.raises(ValueError, match=match):
        calibration_errors(np.array(conf, dtype=float), np.array(correct))


def test_bad_bin_count():
    with pytest.raises(ValueError, match="n_bins"):
        reliability_data([0.5], [True], n_bins=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confidences_on_edges_open_the_upper_bin(dtype):
    # floor(c * M) with exact edges: 0.3, 0.6, 0.7 (not representable) still open bins 3, 6, 7
    conf = (np.arange(11) / 10).astype(dtype)
    assert bin_index(conf, 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    below = np.nextafter(conf[1:], dtype(0))  # one ulp under each edge: the lower bin
    assert bin_index(below, 10).tolist() == list(range(10))
    conf15 = (np.arange(16) / 15).astype(dtype)
    assert bin_index(conf15, 15).tolist() == [*range(15), 14]


@pytest.mark.parametrize("seed", range(3))
def test_edge_values_agree_with_torchmetrics(seed):
    # isotonic-style outputs that sit exactly on the edges k/10 (float32, as predictions are
    # stored), plus one ulp either side; 10 classes so that any c >= 0.1 is the maximum
    rng = np.random.default_rng(seed)
    k, n_bins = 10, 10
    edges = (np.arange(1, 10) / 10).astype(np.float32)
    conf = np.concatenate([edges, np.nextafter(edges, np.float32(0)),
                           np.nextafter(edges, np.float32(1))])
    conf = np.repeat(conf, 7)
    probs = np.empty((conf.size, k), np.float32)
    probs[:] = ((1 - conf) / (k - 1))[:, None]
    probs[:, 0] = conf
    assert (probs.argmax(1) == 0).all() and (probs.max(1) == conf).all()
    labels = np.where(rng.random(conf.size) < 0.6, 0, rng.integers(1, k, conf.size))
    ece, mce = calibration_errors(conf, labels == 0, n_bins=n_bins)
    ref_ece, ref_mce = _torchmetrics(probs, labels, n_bins)
    assert ece == pytest.approx(ref_ece, abs=1e-6)
    assert mce == pytest.approx(ref_mce, abs=1e-6)
    # the old linspace edges (float64) put float32 0.7 etc. in the lower bin: a real change
    old = np.clip(np.searchsorted(np.linspace(0, 1, 11), conf.astype(np.float64),
                                  side="right") - 1, 0, 9)
    assert (old != bin_index(conf, 10)).any()
