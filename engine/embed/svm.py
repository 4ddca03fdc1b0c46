"""RBF support vector machine on embeddings, C and γ chosen by grid search (paper 2 §III-F).

No per-feature standardisation: the triplet loss and the interventions shape the embedding
isotropically (distances are what they act on), and rescaling each axis by its own spread
would undo part of that. Only the global scale matters to an RBF kernel, so γ is searched as
multiples of scikit-learn's ``gamma="scale"`` value 1/(d·Var X) of the training data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

__all__ = ["DEFAULT_GRID", "FittedSVM", "fit_svm", "gamma_scale", "grid_values", "macro_f1"]

# 4 × 3 settings: C over three decades, γ a decade either side of the "scale" heuristic.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "C": (0.1, 1.0, 10.0, 100.0),
    "gamma_factor": (0.1, 1.0, 10.0),
}


def gamma_scale(X: np.ndarray) -> float:
    """Return scikit-learn's ``gamma="scale"``: 1 / (d · Var X) (1.0 for constant X)."""
    var = float(np.var(X))
    return 1.0 / (X.shape[1] * var) if var > 0 else 1.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in ``y_true`` or ``y_pred``.

    Parameters
    ----------
    y_true, y_pred : array_like, shape (N,)
        Class codes.

    Returns
    -------
    float
        Unweighted mean of the per-class F1 scores (0 for a class never predicted).
    """
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


@dataclass
class FittedSVM:
    """A fitted RBF-SVM and the hyper-parameters it was fitted with.

    Attributes
    ----------
    model : sklearn.svm.SVC
        Refitted on all data given to :func:`fit_svm`.
    params : dict
        ``{"C": float, "gamma": float}`` (γ absolute).
    cv_f1 : float or None
        Mean cross-validated macro-F1 of the chosen setting (None without a search).
    cv_results : dict
        Every searched setting's mean macro-F1, keyed "C=..,gamma=..".
    """

    model: SVC
    params: dict[str, float]
    cv_f1: float | None = None
    cv_results: dict[str, float] = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict class codes for embeddings ``X`` (N, d)."""
        return self.model.predict(np.asarray(X, dtype=np.float64))


def grid_values(grid: Mapping[str, Sequence[float]], X: np.ndarray) -> tuple[list, list]:
    """Return the absolute C and γ values of a grid for the training data ``X``.

    Parameters
    ----------
    grid : mapping
        ``{"C": [...], "gamma_factor": [...]}`` or ``{"C": [...], "gamma": [...]}``.
    X : ndarray, shape (N, d)
        Training embeddings (for γ = factor / (d·Var X)).

    Returns
    -------
    Cs, gammas : list of float
    """
    unknown = sorted(set(grid) - {"C", "gamma", "gamma_factor"})
    if unknown or "C" not in grid or ("gamma" in grid) == ("gamma_factor" in grid):
        raise ValueError(
            "grid needs 'C' and exactly one of 'gamma' (absolute) or 'gamma_factor' "
            f"(times 1/(d·Var X)), got keys {sorted(grid)}"
        )
    Cs = [float(c) for c in grid["C"]]
    if "gamma" in grid:
        gammas = [float(g) for g in grid["gamma"]]
    else:
        gammas = [float(f) * gamma_scale(X) for f in grid["gamma_factor"]]
    if not Cs or not gammas or min(Cs) <= 0 or min(gammas) <= 0:
        raise ValueError("grid values for C and gamma must be non-empty and > 0")
    return Cs, gammas


def fit_svm(
    X: np.ndarray,
    y: np.ndarray,
    *,
    grid: Mapping[str, Sequence[float]] | None = None,
    cv: int = 3,
    seed: int = 0,
) -> FittedSVM:
    """Fit ``SVC(kernel="rbf")`` with C and γ chosen by grid search on macro-F1.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        Embeddings (training set).
    y : ndarray, shape (N,)
        Class codes.
    grid : mapping, optional
        ``{"C": [...], "gamma_factor": [...]}`` (γ as multiples of 1/(d·Var X)) or
        ``{"C": [...], "gamma": [...]}`` (absolute). Default :data:`DEFAULT_GRID`.
        A single setting is fitted directly without cross-validation.
    cv : int
        Stratified folds of the search (shuffled with ``seed``); lowered to the size of the
        smallest class when that is smaller (at least 2).
    seed : int
        Seed of the fold shuffling.

    Returns
    -------
    FittedSVM

    Raises
    ------
    ValueError
        Fewer than two classes, mismatched shapes, NaN, or a class too small to search on.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
        raise ValueError(f"X must be (N, d) and y (N,), got {X.shape} and {y.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("embeddings contain NaN or inf values")
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise ValueError("an SVM needs at least two classes, got one")
    Cs, gammas = grid_values(grid if grid is not None else DEFAULT_GRID, X)
    if len(Cs) * len(gammas) == 1:
        model = SVC(kernel="rbf", C=Cs[0], gamma=gammas[0]).fit(X, y)
        return FittedSVM(model, {"C": Cs[0], "gamma": gammas[0]})
    n_cv = min(int(cv), int(counts.min()))
    if n_cv < 2:
        raise ValueError(
            f"class {classes[np.argmin(counts)]!r} has {counts.min()} sample(s); "
            "a grid search needs at least two per class"
        )
    search = GridSearchCV(
        SVC(kernel="rbf"),
        {"C": Cs, "gamma": gammas},
        scoring="f1_macro",
        cv=StratifiedKFold(n_cv, shuffle=True, random_state=seed),
        refit=True,
    ).fit(X, y)
    res = search.cv_results_
    table = {
        f"C={p['C']:g},gamma={p['gamma']:.4g}": float(m)
        for p, m in zip(res["params"], res["mean_test_score"], strict=True)
    }
    best = search.best_params_
    return FittedSVM(
        search.best_estimator_,
        {"C": float(best["C"]), "gamma": float(best["gamma"])},
        float(search.best_score_),
        table,
    )
