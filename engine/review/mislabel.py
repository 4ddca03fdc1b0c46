"""Mislabel queue: cells whose confident prediction disagrees with their given label.

Training sets from immunomagnetic isolation are 95-98 % pure (Röhrl et al. 2023, §5.3);
a calibrated model that confidently (>= 95 %) predicts another class than the given one
points at a contaminant or a labelling error. The queue ranks such cells, most confident
first, for a person to review.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["mislabel_queue", "queue_metrics"]


def _vector(name: str, values: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        want = f"({n},)" if n is not None else "1-D"
        raise ValueError(f"{name} has shape {a.shape}, expected {want}")
    return a


def mislabel_queue(
    pred_class: np.ndarray,
    confidence: np.ndarray,
    given_label: np.ndarray,
    *,
    threshold: float = 0.95,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """Return the cells that confidently disagree with their given label, most confident first.

    A cell is queued when it has a given label (``given_label >= 0``), its predicted class
    differs from it, its confidence is at least ``threshold`` (NaN never is) and it is
    ``eligible``. Ties in confidence keep ascending cell index order (stable ranking).

    Parameters
    ----------
    pred_class : numpy.ndarray
        ``(N,)`` int predicted class codes.
    confidence : numpy.ndarray
        ``(N,)`` float calibrated confidence of the prediction, 0..1.
    given_label : numpy.ndarray
        ``(N,)`` int current given label codes (-1 = none), same coding as ``pred_class``.
    threshold : float
        Minimum confidence, inclusive.
    eligible : numpy.ndarray, optional
        ``(N,)`` bool, e.g. QC passed; default all cells.

    Returns
    -------
    numpy.ndarray
        int64 cell indices (rows), ranked by confidence descending.

    Raises
    ------
    ValueError
        Arrays of different lengths, non-integer codes, or a threshold outside [0, 1].
    """
    pred = _vector("pred_class", pred_class)
    n = pred.shape[0]
    conf = _vector("confidence", confidence, n).astype(np.float64)
    given = _vector("given_label", given_label, n)
    for name, a in (("pred_class", pred), ("given_label", given)):
        if n and a.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer class codes, got {a.dtype}")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
    ok = np.ones(n, bool) if eligible is None else _vector("eligible", eligible, n).astype(bool)
    with np.errstate(invalid="ignore"):
        hit = ok & (given >= 0) & (pred != given) & (conf >= threshold)
    idx = np.flatnonzero(hit)
    order = np.argsort(-conf[idx], kind="stable")  # idx ascending: ties stay by cell index
    return idx[order].astype(np.int64)


def queue_metrics(queue: np.ndarray, is_contaminant: np.ndarray) -> dict[str, Any]:
    """Measure a mislabel queue against known contaminants (simulated data).

    Parameters
    ----------
    queue : numpy.ndarray
        Ranked cell indices, as returned by :func:`mislabel_queue`.
    is_contaminant : numpy.ndarray
        ``(N,)`` bool over all candidate cells: the true class differs from the given label.
        Restrict it to the cells the queue could hold (e.g. QC passed) for a fair recall.

    Returns
    -------
    dict
        ``queue_size``; ``contaminants``: true contaminants in ``is_contaminant`` (all,
        queued or not); ``found``: contaminants in the queue; ``precision`` = found /
        queue_size; ``recall`` = found / contaminants; ``k`` = contaminants;
        ``precision_at_k``: contaminants among the first ``k`` queued cells divided by
        ``k`` (a queue shorter than ``k`` counts its missing places as misses). Ratios
        with a zero denominator are NaN.

    Raises
    ------
    ValueError
        ``queue`` holds repeated or out-of-range indices, or ``is_contaminant`` is not 1-D.
    """
    truth = _vector("is_contaminant", is_contaminant).astype(bool)
    q = _vector("queue", queue).astype(np.int64)
    if q.size and (q.min() < 0 or q.max() >= truth.shape[0]):
        raise ValueError(f"queue holds indices outside 0..{truth.shape[0] - 1}")
    if np.unique(q).size != q.size:
        raise ValueError("queue holds repeated cell indices")
    hits = truth[q]
    k = int(truth.sum())
    found = int(hits.sum())
    return {
        "queue_size": int(q.size),
        "contaminants": k,
        "found": found,
        "precision": found / q.size if q.size else math.nan,
        "recall": found / k if k else math.nan,
        "precision_at_k": int(hits[:k].sum()) / k if k else math.nan,
        "k": k,
    }
