"""The review queue: the cells a person must decide before a sample can be signed off.

Two kinds of cells enter it (CellaVision's discipline: low-confidence cells go to an
"Unidentified" group that a technician must resolve, and paper 1 §5.3's mislabel search):

1. **Disputed** cells: the calibrated model confidently (>= ``threshold``, 95 % by
   default) predicts another class than the cell's label - a contaminant or a labelling
   error (:func:`~hemalens.engine.review.mislabel.mislabel_queue`), most confident first;
2. **Uncertain** cells: QC-passed cells whose calibrated confidence is below
   ``uncertain_below`` (80 %), or that are flagged out-of-distribution, least certain first.

Membership is computed from the labels at import (``original_label``), not the current
ones, so relabelling a queued cell does not make it leave the queue: the queue is the
list of cells to decide, and the reviewer's progress is the decided share of it.
"""

from __future__ import annotations

import numpy as np

from hemalens.engine.review.mislabel import mislabel_queue

__all__ = ["REVIEW_BELOW", "REVIEW_THRESHOLD", "disputed", "review_queue"]

#: Confidence at which a disagreement with the label counts (paper 1: 95 %).
REVIEW_THRESHOLD = 0.95
#: Cells less confident than this are queued as uncertain.
REVIEW_BELOW = 0.8


def disputed(
    predicted: np.ndarray,
    confidence: np.ndarray,
    labels: np.ndarray,
    *,
    threshold: float = REVIEW_THRESHOLD,
) -> np.ndarray:
    """Whether each cell's confident prediction disputes its label ("≠" in the gallery).

    Parameters
    ----------
    predicted : numpy.ndarray
        ``(N,)`` predicted class codes (-1 = none), in the labels' coding.
    confidence : numpy.ndarray
        ``(N,)`` calibrated confidence (NaN = none).
    labels : numpy.ndarray
        ``(N,)`` label codes (-1 = none).
    threshold : float
        Minimum confidence for a dispute.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` bool.
    """
    conf = np.nan_to_num(np.asarray(confidence, np.float64), nan=-1.0)
    pred = np.asarray(predicted)
    lab = np.asarray(labels)
    return (lab >= 0) & (pred >= 0) & (pred != lab) & (conf >= threshold)


def review_queue(
    predicted: np.ndarray,
    confidence: np.ndarray,
    original: np.ndarray,
    eligible: np.ndarray,
    *,
    ood: np.ndarray | None = None,
    threshold: float = REVIEW_THRESHOLD,
    uncertain_below: float = REVIEW_BELOW,
) -> np.ndarray:
    """Return the queued cells in review order: disputed first, then uncertain.

    Parameters
    ----------
    predicted : numpy.ndarray
        ``(N,)`` predicted class codes in the labels' coding (-1 = none).
    confidence : numpy.ndarray
        ``(N,)`` calibrated confidence.
    original : numpy.ndarray
        ``(N,)`` label codes at import (-1 = none).
    eligible : numpy.ndarray
        ``(N,)`` bool, e.g. passed QC.
    ood : numpy.ndarray, optional
        ``(N,)`` bool out-of-distribution flag; such cells are queued as uncertain.
    threshold, uncertain_below : float
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        int64 cell ids, each once.
    """
    pred = np.asarray(predicted, np.int64)
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(eligible, bool) & (pred >= 0)
    first = mislabel_queue(pred, np.nan_to_num(conf, nan=-1.0), np.asarray(original, np.int64),
                           threshold=threshold, eligible=ok)
    unsure = ok & ~(conf >= uncertain_below)  # NaN confidence counts as uncertain
    if ood is not None:
        unsure |= np.asarray(ood, bool) & np.asarray(eligible, bool)
    unsure[first] = False
    rest = np.flatnonzero(unsure)
    rest = rest[np.argsort(np.nan_to_num(conf[rest], nan=-1.0), kind="stable")]
    return np.concatenate([first, rest]).astype(np.int64)
