"""Region-aware cross-validation folds (paper 2 §III-F: 6 folds, one each for test and val).

Cells from one region (one image / field of view) are never spread over several folds, and
the folds get similar class distributions (scikit-learn's ``StratifiedGroupKFold``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

__all__ = ["FoldSplit", "region_folds"]


@dataclass(frozen=True)
class FoldSplit:
    """Sorted sample indices of one cross-validation round."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def region_folds(y: np.ndarray, groups: np.ndarray, k: int, *, seed: int = 0) -> list[FoldSplit]:
    """Split into ``k`` region-disjoint, class-stratified folds and rotate their roles.

    Round i uses fold i as test, fold (i + 1) mod k as validation and the rest for training,
    so every fold is the test fold once and the validation fold once.

    Parameters
    ----------
    y : array_like, shape (N,)
        Class labels.
    groups : array_like, shape (N,)
        Region of each sample (any hashable values); a region stays in one fold.
    k : int
        Number of folds (>= 3: train, validation and test each need one).
    seed : int
        Seed of the group shuffling.

    Returns
    -------
    list of FoldSplit
        ``k`` rounds.

    Raises
    ------
    ValueError
        k < 3, fewer regions than k, mismatched shapes, or a fold left empty.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 3:
        raise ValueError(f"k must be an integer >= 3 (test, validation and training), got {k!r}")
    if y.ndim != 1 or groups.shape != y.shape:
        raise ValueError(f"y and groups must be 1-D of equal length, got {y.shape}, {groups.shape}")
    n_groups = np.unique(groups).size
    if n_groups < k:
        raise ValueError(f"{n_groups} regions cannot fill {k} folds (a region is never split)")
    sgkf = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
    folds = [np.sort(test) for _, test in sgkf.split(np.zeros((y.size, 1)), y, groups)]
    if any(f.size == 0 for f in folds):
        raise ValueError(f"a fold came out empty with {n_groups} regions; use fewer folds")
    out = []
    for i in range(k):
        test, val = folds[i], folds[(i + 1) % k]
        train = np.sort(np.concatenate([folds[j] for j in range(k) if j not in (i, (i + 1) % k)]))
        out.append(FoldSplit(train=train, val=val, test=test))
    return out
