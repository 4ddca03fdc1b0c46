"""Parametric t-SNE: affinities, KL, determinism, gradients, storage and map quality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from hemalens.engine.embed.projection import trustworthiness, tsne_map
from hemalens.engine.embed.ptsne import (
    ParametricTSNE,
    conditional_probabilities,
    joint_probabilities,
    kl_loss,
)
from hemalens.engine.jobs import CallbackProgress, Cancelled


def _mixture(n_per: int, seed: int, dim: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Three isotropic Gaussians 8 standard deviations apart."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(3, dim))
    centres *= 8 / np.linalg.norm(centres[0] - centres[1])
    y = np.repeat(np.arange(3), n_per)
    return centres[y] + rng.normal(size=(3 * n_per, dim)), y


def _small_fit(seed: int = 0, **kw) -> tuple[ParametricTSNE, np.ndarray]:
    X, _ = _mixture(20, 0, dim=6)
    opts = {"hidden": (32, 32), "epochs": 15, "batch_size": 32, "input_noise": 0.2} | kw
    return ParametricTSNE(6, seed=seed, **opts).fit(X), X


def test_joint_probabilities_are_symmetric_normalised_with_rows_of_conditionals_summing_to_1():
    X = np.random.default_rng(1).normal(size=(120, 5))
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    P_cond, beta = conditional_probabilities(d2, 20)
    np.testing.assert_allclose(P_cond.sum(axis=1), 1, atol=1e-12)
    assert np.all(np.diag(P_cond) == 0) and np.all(beta > 0)
    np.testing.assert_allclose(
        joint_probabilities(X, 20, neighbors=119), (P_cond + P_cond.T) / (2 * len(X)), atol=1e-15
    )
    # Default: only the 3 * perplexity + 1 nearest neighbours of each row get affinity.
    P = joint_probabilities(X, 20)
    np.testing.assert_allclose(P, P.T, atol=0)
    assert P.sum() == pytest.approx(1, abs=1e-12) and np.all(np.diag(P) == 0)
    P_knn, _ = conditional_probabilities(d2, 20, neighbors=61)
    assert np.all((P_knn > 0).sum(axis=1) == 61)
    nearest = np.argsort(d2 + np.diag(np.full(120, np.inf)), axis=1)[:, :61]
    assert np.all(np.take_along_axis(P_knn, nearest, axis=1) > 0)
    np.testing.assert_allclose(P, (P_knn + P_knn.T) / (2 * len(X)), atol=1e-15)


def test_binary_search_reaches_the_perplexity():
    X = np.random.default_rng(2).normal(size=(200, 8)) * np.geomspace(0.1, 10, 8)
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    for perplexity in (5.0, 30.0):
        P, _ = conditional_probabilities(d2, perplexity)
        h = -(np.where(P > 0, P * np.log(np.where(P > 0, P, 1)), 0)).sum(axis=1)
        np.testing.assert_allclose(np.exp(h), perplexity, rtol=0, atol=1e-3)
    # Tiny batches: perplexity clipped to (n - 1) / 3, still a valid distribution.
    P = joint_probabilities(X[:7], 30)
    assert P.sum() == pytest.approx(1) and np.all(P[~np.eye(7, dtype=bool)] > 0)
    with pytest.raises(ValueError, match="at least 4"):
        joint_probabilities(X[:3], 30)


def test_kl_matches_direct_numpy_and_its_gradient_matches_autograd():
    rng = np.random.default_rng(3)
    P = joint_probabilities(rng.normal(size=(60, 4)), 10)
    Y = rng.normal(size=(60, 2)) * 3
    d2 = ((Y[:, None] - Y[None]) ** 2).sum(-1)
    w = 1 / (1 + d2)
    np.fill_diagonal(w, 0)
    Q = w / w.sum()
    pos = P > 0  # 0 log 0 = 0
    kl_np = np.sum(P[pos] * np.log(P[pos] / Q[pos]))
    Pt = torch.tensor(P)
    Yt = torch.tensor(Y, requires_grad=True)
    assert kl_loss(Pt, Yt).item() == pytest.approx(kl_np, rel=1e-12)
    # closed-form gradient (also with exaggeration) against autograd of the plain formula
    for ex in (1.0, 4.0):
        (g,) = torch.autograd.grad(kl_loss(Pt, Yt, exaggeration=ex), Yt)
        dd = torch.cdist(Yt, Yt).square()
        lw = -torch.log1p(dd)
        ref = -ex * (Pt * lw).sum() + torch.log(torch.exp(lw).sum() - 60)
        (g_ref,) = torch.autograd.grad(ref, Yt)
        np.testing.assert_allclose(g.numpy(), g_ref.numpy(), rtol=1e-9, atol=1e-12)


def test_fit_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, X = _small_fit(seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    b, _ = _small_fit(seed=5)
    c, _ = _small_fit(seed=6)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert a.history == b.history
    assert not np.allclose(a.transform(X), c.transform(X))


def test_module_maps_raw_inputs_and_passes_gradients_to_them():
    m, X = _small_fit()
    x = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    y = m.module(x)
    np.testing.assert_allclose(y.detach().numpy(), m.transform(X), rtol=1e-6, atol=1e-6)
    target = torch.zeros_like(y)
    torch.nn.functional.l1_loss(y, target).backward()  # a PALI-like term
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_arrays_round_trip_and_foreign_meta():
    m, X = _small_fit()
    arrays, meta = m.to_arrays()
    meta = json.loads(json.dumps(meta))  # JSON-able
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert {"mean", "scale"} <= set(arrays)
    back = ParametricTSNE.from_arrays(arrays, meta)
    np.testing.assert_array_equal(back.transform(X), m.transform(X))
    with pytest.raises(ValueError, match="not a parametric t-SNE"):
        ParametricTSNE.from_arrays(arrays, {**meta, "format": "other"})
    with pytest.raises(ValueError, match="do not fit"):
        ParametricTSNE.from_arrays(arrays, {**meta, "hidden": [16, 16]})


def test_progress_and_cancel():
    X, _ = _mixture(10, 0, dim=4)
    seen = []
    ParametricTSNE(4, hidden=(8,), epochs=3).fit(
        X, progress=CallbackProgress(on_progress=lambda d, t: seen.append((d, t)))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    prog = CallbackProgress()
    prog.cancel()
    with pytest.raises(Cancelled):
        ParametricTSNE(4, hidden=(8,), epochs=3).fit(X, progress=prog)
    with pytest.raises(ValueError, match="NaN"):
        ParametricTSNE(4).fit(np.full((10, 4), np.nan))


def test_gaussian_clusters_stay_separated_on_held_out_points():
    X, y = _mixture(60, 0)
    X_test, y_test = _mixture(30, 1)
    m = ParametricTSNE(10, hidden=(64, 64), epochs=60, batch_size=256).fit(X)
    knn = KNeighborsClassifier(5).fit(m.transform(X), y)
    assert knn.score(m.transform(X_test), y_test) >= 0.95


def test_digits_held_out_trustworthiness_close_to_opentsne():
    # Issue requirement: within 0.05 of openTSNE's transform on digits, 70/30 split.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    ref = tsne_map(X_tr, seed=0)
    tw_ref = trustworthiness(X_te, ref.transform(X_te))
    # Default settings but a budget for one thread: 100 full-batch epochs (~6 s).
    m = ParametricTSNE(64, epochs=100, batch_size=2048).fit(X_tr)
    tw = trustworthiness(X_te, m.transform(X_te))
    assert tw >= tw_ref - 0.05, (tw, tw_ref)


def test_tsne_map_small_inputs_and_errors():
    X, _ = _mixture(4, 0, dim=5)  # 12 rows: perplexity 30 is clipped to 11 / 3
    m = tsne_map(X, seed=0, n_iter=50, early_exaggeration_iter=20)
    assert m.points.shape == (12, 2) and m.perplexity == pytest.approx(11 / 3)
    assert m.transform(X[:3] + 0.01).shape == (3, 2)
    with pytest.raises(ValueError, match="features"):
        m.transform(X[:, :4])
    with pytest.raises(ValueError, match="at least 4 cells"):
        tsne_map(X[:3])
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tsne_map(bad)
    with pytest.raises(ValueError, match="NaN"):
        m.transform(bad)
