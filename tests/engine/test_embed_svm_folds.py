"""RBF-SVM grid search and region-aware folds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from hemalens.engine.embed.folds import region_folds
from hemalens.engine.embed.svm import fit_svm, gamma_scale, macro_f1


def _blobs(n=240, seed=0):
    X, y = make_blobs(n, n_features=6, centers=4, cluster_std=2.5, random_state=seed)
    return X, y


def test_fit_svm_matches_sklearn_grid_search():
    X, y = _blobs()
    grid = {"C": (0.1, 1.0, 10.0), "gamma_factor": (0.3, 1.0, 3.0)}
    fit = fit_svm(X, y, grid=grid, cv=3, seed=1)
    gs = gamma_scale(X)
    assert gs == pytest.approx(1 / (X.shape[1] * X.var()))
    ref = GridSearchCV(
        SVC(kernel="rbf"),
        {"C": [0.1, 1.0, 10.0], "gamma": [0.3 * gs, gs, 3 * gs]},
        scoring="f1_macro",
        cv=StratifiedKFold(3, shuffle=True, random_state=1),
    ).fit(X, y)
    assert fit.params["C"] == ref.best_params_["C"]
    assert fit.params["gamma"] == pytest.approx(ref.best_params_["gamma"])
    assert fit.cv_f1 == pytest.approx(ref.best_score_)
    assert len(fit.cv_results) == 9
    np.testing.assert_array_equal(fit.predict(X), ref.predict(X))
    Xt, yt = _blobs(seed=0)
    assert macro_f1(yt, fit.predict(Xt)) > 0.8


def test_single_setting_skips_the_search_and_macro_f1():
    X, y = _blobs()
    fit = fit_svm(X, y, grid={"C": [5.0], "gamma": [0.01]})
    assert fit.params == {"C": 5.0, "gamma": 0.01} and fit.cv_f1 is None
    pred = fit.predict(X)
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    assert macro_f1([0, 1, 1], [0, 1, 1]) == 1.0


def test_fit_svm_bad_inputs():
    X, y = _blobs()
    for kwargs, msg in [
        ({"X": X, "y": np.zeros(len(y), int)}, "two classes"),
        ({"X": X[:, 0], "y": y}, "(N, d)"),
        ({"X": np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), "y": y}, "NaN"),
        ({"X": X, "y": y, "grid": {"C": [1.0]}}, "gamma"),
        ({"X": X, "y": y, "grid": {"C": [-1.0, 1.0], "gamma": [1.0]}}, "> 0"),
    ]:
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            fit_svm(**kwargs)
    y1 = y.copy()
    y1[0] = 9
    with pytest.raises(ValueError, match="1 sample"):
        fit_svm(X, y1)


def _regions(seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(60), rng.integers(5, 15, 60))
    # classes mixed within regions, imbalanced overall
    y = rng.choice(4, size=groups.size, p=[0.5, 0.25, 0.15, 0.1])
    return y, groups


@pytest.mark.parametrize("k", [3, 6])
def test_region_folds_keep_regions_and_rotate_roles(k):
    y, groups = _regions()
    splits = region_folds(y, groups, k, seed=0)
    assert len(splits) == k
    tests = [s.test for s in splits]
    allidx = np.sort(np.concatenate(tests))
    np.testing.assert_array_equal(allidx, np.arange(y.size))  # the test folds partition
    for i, s in enumerate(splits):
        np.testing.assert_array_equal(s.val, splits[(i + 1) % k].test)
        parts = np.concatenate([s.train, s.val, s.test])
        assert parts.size == y.size and np.unique(parts).size == y.size
        # a region is in exactly one of train / val / test
        sets = [set(groups[p]) for p in (s.train, s.val, s.test)]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    # similar class distributions: every fold within 10 points of the overall share
    overall = np.bincount(y, minlength=4) / y.size
    for t in tests:
        assert np.abs(np.bincount(y[t], minlength=4) / t.size - overall).max() < 0.1
    again = region_folds(y, groups, k, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again, strict=True))


def test_region_folds_bad_inputs():
    y, groups = _regions()
    with pytest.raises(ValueError, match=">= 3"):
        region_folds(y, groups, 2)
    with pytest.raises(ValueError, match="regions"):
        region_folds(y[:20], np.repeat([0, 1], 10), 3)
    with pytest.raises(ValueError, match="equal length"):
        region_folds(y, groups[:-1], 3)
