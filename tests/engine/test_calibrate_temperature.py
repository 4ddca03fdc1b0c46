"""Temperature scaling: recovery of a known T, why the copied LBFGS recipe is not used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from hemalens.engine.calibrate import (
    fit_temperature,
    fit_temperature_probs,
    nll,
    softmax_t,
    temperature_scale_probs,
)

T_TRUE = 2.5


def _exact_logits(seed: int = 0, rows: int = 400, m: int = 50, k: int = 4):
    """Logits whose NLL optimum is exactly T_TRUE.

    Each row has class probabilities c_k / m with integer counts c_k >= 1; it appears m
    times, c_k of them labelled k. With logits log(p) the label frequencies equal the
    softmax exactly, so dNLL/d(1/T) = 0 at T = 1; logits 2.5 * log(p) put it at T = 2.5.
    """
    rng = np.random.default_rng(seed)
    counts = 1 + rng.multinomial(m - k, rng.dirichlet(np.full(k, 0.5), size=rows))
    p = counts / m
    logits = np.repeat(T_TRUE * np.log(p), m, axis=0)
    logits += np.repeat(rng.normal(0, 3, (rows, 1)), m, axis=0)  # softmax ignores shifts
    labels = np.concatenate([np.repeat(np.arange(k), c) for c in counts])
    return logits, labels


def _sampled_logits(seed: int = 0, n: int = 50_000, k: int = 4):
    """True logits z, labels drawn from softmax(z); the model reports 2.5 * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = softmax(z, axis=1)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return T_TRUE * z, labels


def _lbfgs_recipe(logits: np.ndarray, labels: np.ndarray) -> float:
    """The widely copied recipe: T0 = 1.5, one LBFGS(lr=0.01, max_iter=50) step."""
    z = torch.tensor(logits, dtype=torch.float32)
    y = torch.tensor(labels)
    t = torch.nn.Parameter(torch.full((1,), 1.5))
    opt = torch.optim.LBFGS([t], lr=0.01, max_iter=50)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / t, y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(t.detach())


def test_recovers_known_temperature_exactly():
    logits, labels = _exact_logits()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(T_TRUE, abs=1e-2)
    assert t == pytest.approx(T_TRUE, abs=1e-4)  # the optimiser itself is far tighter
    # it is the minimum: the NLL grows on both sides
    best = nll(logits, labels, t)
    assert best < min(nll(logits, labels, t * 0.99), nll(logits, labels, t * 1.01))


def test_recovers_temperature_from_sampled_labels():
    logits, labels = _sampled_logits()
    assert fit_temperature(logits, labels) == pytest.approx(T_TRUE, abs=0.03)  # sampling noise


def test_the_copied_lbfgs_recipe_stops_far_from_the_optimum():
    logits, labels = _exact_logits()
    recipe = _lbfgs_recipe(logits, labels)
    ours = fit_temperature(logits, labels)
    assert abs(ours - T_TRUE) < 1e-2
    # lr=0.01 scales every LBFGS step: 50 tiny iterations barely leave T0 = 1.5
    assert abs(recipe - T_TRUE) > 0.5
    assert nll(logits, labels, recipe) > nll(logits, labels, ours) + 1e-3


def test_overconfident_and_underconfident_directions():
    logits, labels = _exact_logits(seed=3)
    assert fit_temperature(logits / T_TRUE * 0.5, labels) == pytest.approx(0.5, abs=1e-3)
    assert fit_temperature(logits / T_TRUE, labels) == pytest.approx(1.0, abs=1e-3)


def test_fit_on_probabilities_matches_logits():
    logits, labels = _exact_logits(seed=1)
    probs = softmax(logits, axis=1)
    assert fit_temperature_probs(probs, labels) == pytest.approx(T_TRUE, abs=1e-3)


def test_softmax_t_and_probability_scaling_agree():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20, 5))
    for t in (0.5, 1.0, 2.5):
        ref = softmax(z / t, axis=1)
        np.testing.assert_allclose(softmax_t(z, t), ref, rtol=1e-12)
        # softmax(log(softmax(z)) / T) == softmax(z / T): the MC-mean scaling is consistent
        np.testing.assert_allclose(temperature_scale_probs(softmax(z, axis=1), t), ref,
                                   rtol=1e-9, atol=1e-12)
    p = softmax(z, axis=1)
    assert np.array_equal(softmax_t(z, 3.0).argmax(1), p.argmax(1))  # T never changes argmax
    assert np.all(softmax_t(z, 3.0).max(1) < p.max(1))
    with pytest.raises(ValueError, match="> 0"):
        softmax_t(z, 0.0)
    # zero probabilities (float32 underflow) do not produce NaN
    assert np.all(np.isfinite(temperature_scale_probs(np.array([[1.0, 0.0, 0.0]]), 2.0)))


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.zeros((0, 3)), np.zeros(0, int), r"N>0"),
        (np.zeros((4, 1)), np.zeros(4, int), r"K>=2"),
        (np.zeros((4, 3)), np.zeros(3, int), "labels must have shape"),
        (np.full((2, 3), np.nan), np.zeros(2, int), "NaN"),
        (np.zeros((2, 3)), np.array([0, 3]), "0..2"),
        (np.zeros((2, 3)), np.array([0.5, 1.0]), "integer"),
    ],
)
def test_bad_inputs(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, labels)
