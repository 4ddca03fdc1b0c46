"""Train / validation / test splits: stratified per class, or with a held-out donor.

Each class is shuffled (seeded) and cut into the three parts by largest-remainder
allocation, so every split holds each class within +-1 cell of its exact share, and at
least one cell of it (classes too small for that, e.g. 3 cells at 70/20/10, give one cell to
each part first). scikit-learn's two-stage
``train_test_split`` only guarantees that per stage, which can compound to more than one
cell; the allocation here is the same idea done once over the three parts.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SPLIT_NAMES", "check_split", "make_split", "stable_parts"]

SPLIT_NAMES = ("train", "val", "test")


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """Return counts per part summing to ``n`` (largest remainders; >= 1 where f > 0)."""
    exact = n * fractions
    counts = np.floor(exact).astype(int)
    rem = n - counts.sum()
    # ties go to the earlier part (train before val before test)
    order = np.lexsort((np.arange(len(exact)), -(exact - counts)))
    counts[order[:rem]] += 1
    for k in np.flatnonzero((counts == 0) & (fractions > 0)):
        donor = int(np.argmax(counts))  # the biggest part gives one cell up
        counts[donor] -= 1
        counts[k] += 1
    return counts


def _fractions(fractions: tuple[float, float, float] | list[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=float).reshape(-1)
    if f.size != 3 or not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError(f"fractions must be three numbers >= 0, got {fractions}")
    if not math.isclose(float(f.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {f.sum():.6g})")
    if f[0] <= 0 or f[1] <= 0:
        raise ValueError(f"train and validation fractions must be > 0, got {fractions}")
    return f


def _labels(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("no labelled cells to split")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class codes, got {y.dtype}")
    if y.min() < 0:
        raise ValueError("labels must be >= 0 (unlabelled cells cannot be split)")
    return y.astype(np.int64)


def _stratified(
    y: np.ndarray, rows: np.ndarray, f: np.ndarray, rng: np.random.Generator, min_per_class: int
) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y[rows]):
        members = rows[y[rows] == c]
        if members.size < min_per_class:
            raise ValueError(
                f"class {int(c)} has only {members.size} cell(s); this split needs at least "
                f"{min_per_class} per class"
            )
        members = rng.permutation(members)
        counts = _allocate(members.size, f)
        for k, piece in enumerate(np.split(members, np.cumsum(counts)[:-1])):
            parts[k].append(piece)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def make_split(
    labels: np.ndarray,
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    donors: np.ndarray | None = None,
    test_donor: str | None = None,
) -> dict[str, np.ndarray]:
    """Split cells into train / val / test, stratified by class and seeded.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N,)`` integer class codes >= 0.
    seed : int
        Seed of the shuffle (same seed and labels -> same split).
    fractions : tuple of float
        Train, validation and test shares (sum 1; paper 1: 70/20/10).
    donors : numpy.ndarray, optional
        ``(N,)`` donor of each cell; needed with ``test_donor``.
    test_donor : str, optional
        Donor-held-out split (paper 1, §5): the test set is every cell of this donor, and
        the other cells are split into train and validation in the ratio of the first two
        fractions (the test fraction is ignored).

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"train", "val", "test"}``: sorted int64 row indices into ``labels``; disjoint,
        together covering every cell.

    Raises
    ------
    ValueError
        Empty or non-integer labels, bad fractions, a class with fewer than 3 cells (2
        outside the test donor in a donor split), an unknown donor, or a donor split that
        leaves a class only in the test donor.
    """
    y = _labels(labels)
    f = _fractions(fractions)
    rng = np.random.default_rng(seed)
    rows = np.arange(y.size)
    if test_donor is None:
        min_per = int(np.count_nonzero(f > 0))
        train, val, test = _stratified(y, rows, f, rng, min_per)
        return {"train": train, "val": val, "test": test}

    if donors is None:
        raise ValueError("a donor-held-out split needs the donor of every cell")
    d = np.asarray(donors).astype(str).reshape(-1)
    if d.size != y.size:
        raise ValueError(f"{d.size} donors for {y.size} labels")
    known = sorted(set(d.tolist()))
    if str(test_donor) not in known:
        raise ValueError(f"unknown donor {test_donor!r}; donors: {known}")
    held = d == str(test_donor)
    rest = rows[~held]
    if rest.size == 0:
        raise ValueError(f"donor {test_donor!r} holds every cell; nothing is left to train on")
    lost = sorted(set(y[held].tolist()) - set(y[rest].tolist()))
    if lost:
        raise ValueError(
            f"classes {lost} occur only in donor {test_donor!r}; they cannot be trained on"
        )
    f2 = np.array([f[0], f[1], 0.0]) / (f[0] + f[1])
    train, val, _ = _stratified(y, rest, f2, rng, 2)
    return {"train": train, "val": val, "test": rows[held].astype(np.int64)}


def check_split(split: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Validate a given split over ``n`` rows.

    Parameters
    ----------
    split : dict
        ``{"train", "val"[, "test"]}`` row indices.
    n : int
        Number of rows.

    Returns
    -------
    dict of str to numpy.ndarray
        The split as sorted int64 arrays (``test`` empty when missing).

    Raises
    ------
    ValueError
        Missing or empty train/val, indices out of range, repeated or shared indices.
    """
    out: dict[str, np.ndarray] = {}
    for k in SPLIT_NAMES:
        if k not in split and k != "test":
            raise ValueError(f"split has no {k!r} part")
        idx = np.asarray(split.get(k, np.zeros(0, np.int64))).reshape(-1)
        if idx.size and idx.dtype.kind not in "iu":
            raise ValueError(f"split[{k!r}] must hold integer indices, got {idx.dtype}")
        idx = np.sort(idx.astype(np.int64))
        if idx.size and (idx[0] < 0 or idx[-1] >= n):
            raise ValueError(f"split[{k!r}] has indices outside 0..{n - 1}")
        if np.any(np.diff(idx) == 0):
            raise ValueError(f"split[{k!r}] repeats indices")
        out[k] = idx
    if out["train"].size == 0 or out["val"].size == 0:
        raise ValueError("the training and validation splits must not be empty")
    allidx = np.concatenate(list(out.values()))
    if np.unique(allidx).size != allidx.size:
        raise ValueError("a cell is in more than one split")
    return out


def stable_parts(
    strata: np.ndarray,
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    donors: np.ndarray | None = None,
    test_donor: str | None = None,
) -> np.ndarray:
    """Assign every row to train (0), validation (1) or test (2), stably.

    Meant for a population that never changes (a project's QC-passed cells) with strata
    that never change (their labels at import): a reviewer's relabels and exclusions then
    never move a cell from one part to another - a relabelled test cell stays in test.
    Each stratum is shuffled by a generator seeded with ``(seed, stratum)`` and cut by the
    largest-remainder allocation of :func:`make_split`; a stratum too small for every part
    fills train first, then validation.

    Parameters
    ----------
    strata : numpy.ndarray
        ``(N,)`` integer stratum of each row (any integers, e.g. -1 for "unlabelled").
    seed : int
        Seed.
    fractions : tuple of float
        Train, validation and test shares.
    donors : numpy.ndarray, optional
        ``(N,)`` donor of each row; needed with ``test_donor``.
    test_donor : str, optional
        Every row of this donor is test; the others are split into train and validation.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int8 part of each row.

    Raises
    ------
    ValueError
        Bad fractions, a missing donor array, or an unknown donor.
    """
    st = np.asarray(strata).reshape(-1)
    if st.size and st.dtype.kind not in "iu":
        raise ValueError(f"strata must be integers, got {st.dtype}")
    f = _fractions(fractions)
    parts = np.zeros(st.size, np.int8)
    rows = np.arange(st.size)
    if test_donor is not None:
        if donors is None:
            raise ValueError("a donor-held-out split needs the donor of every cell")
        d = np.asarray(donors).astype(str).reshape(-1)
        if d.size != st.size:
            raise ValueError(f"{d.size} donors for {st.size} cells")
        if str(test_donor) not in set(d.tolist()):
            raise ValueError(f"unknown donor {test_donor!r}; donors: {sorted(set(d.tolist()))}")
        held = d == str(test_donor)
        parts[held] = 2
        rows = rows[~held]
        f = np.array([f[0], f[1], 0.0]) / (f[0] + f[1])
    for c in np.unique(st[rows]):
        members = rows[st[rows] == c]
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(c) & 0xFFFFFFFF])
        members = rng.permutation(members)
        n = members.size
        if n >= int(np.count_nonzero(f > 0)):
            counts = _allocate(n, f)
        else:  # too few for every part: train first, then validation
            counts = np.array([1, n - 1, 0]) if n > 1 else np.array([1, 0, 0])
        for k, piece in enumerate(np.split(members, np.cumsum(counts)[:-1])):
            parts[piece] = k
    return parts
