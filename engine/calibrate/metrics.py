"""Calibration errors (ECE, MCE) and reliability-diagram data over equal-width bins.

Bin convention
--------------
``M`` equal-width bins over ``[0, 1]``. Bin ``m`` holds confidences ``c`` with
``m/M <= c < (m+1)/M`` (lower edge included, upper excluded), except the last bin, which
is closed: ``[(M-1)/M, 1]``. The bin index is the integer ``floor(c * M)``, clipped to
``M - 1`` so that a confidence of exactly 1.0 falls in the last bin. The edges are exact:
edge ``k`` is ``k / M`` correctly rounded to the confidence's own precision (float32
confidences are compared with float32 edges, anything else with float64 edges), never an
accumulated ``linspace`` value. A confidence that sits on an edge (e.g. an isotonic output
of exactly 0.7 with ``M = 10``) therefore always opens the upper bin.

``torchmetrics`` uses the same half-open bins, but (a) puts 1.0 in a separate, eleventh
bin, and (b) takes its edges from ``torch.linspace``, which is off by one ulp on some
edges (float64 ``linspace(0, 1, 11)[3]`` is 0.30000000000000004, so torchmetrics puts a
float64 0.3 in the lower bin). For float32 confidences and ``M = 10`` every torchmetrics
edge is exact and the two agree on every value below 1.0. Over-confident models emit
1.0 (float32 softmax saturates), so keeping it in the top bin matters for MCE: a lone
1.0 bin would be a bin of its own with its own gap.
"""

from __future__ import annotations

import numpy as np


def _as_confidence(confidence) -> np.ndarray:
    """Confidences as a flat float array, float32 kept (its edges are float32), else float64."""
    conf = np.asarray(confidence)
    dtype = np.float32 if conf.dtype == np.float32 else np.float64
    return conf.astype(dtype, copy=False).ravel()


def _validate(confidence, correct, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    conf = _as_confidence(confidence)
    corr = np.asarray(correct).ravel()
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if conf.size == 0:
        raise ValueError("calibration needs at least one prediction, got none")
    if corr.shape != conf.shape:
        raise ValueError(
            f"confidence and correct differ in length: {conf.size} vs {corr.size}"
        )
    if not np.all(np.isfinite(conf)):
        raise ValueError("confidence contains NaN or infinite values")
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(
            f"confidence must lie in [0, 1], got range [{conf.min():g}, {conf.max():g}]"
        )
    if corr.dtype != bool:
        if not np.all(np.isin(corr, (0, 1))):
            raise ValueError("correct must be boolean or 0/1")
        corr = corr.astype(bool)
    return conf, corr


def bin_edges(n_bins: int, dtype=np.float64) -> np.ndarray:
    """Return the exact bin edges ``k / n_bins``, ``k = 0 .. n_bins``, in ``dtype``.

    Each edge is ``k / n_bins`` correctly rounded (one IEEE division in float64, then one
    rounding to ``dtype``), unlike ``linspace``, whose accumulated steps can be an ulp off.

    Parameters
    ----------
    n_bins : int
        Number of equal-width bins.
    dtype : numpy dtype
        Precision of the edges (that of the confidences they are compared with).

    Returns
    -------
    ndarray, shape (n_bins + 1,)
    """
    return (np.arange(n_bins + 1, dtype=np.float64) / n_bins).astype(dtype)


def bin_index(confidence: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Return the bin of each confidence under the module's convention.

    The index is ``floor(c * n_bins)`` with exact edges: the number of edges
    :func:`bin_edges` at or below ``c``, minus one, clipped to ``n_bins - 1`` (1.0 falls in
    the last bin). Float32 confidences are compared with float32 edges, others in float64.

    Parameters
    ----------
    confidence : ndarray
        Confidences in ``[0, 1]``.
    n_bins : int
        Number of equal-width bins.

    Returns
    -------
    ndarray of int
        Bin index in ``0 .. n_bins - 1``; bins are ``[k/M, (k+1)/M)``, the last one
        ``[(M-1)/M, 1]``.
    """
    conf = _as_confidence(confidence)
    idx = np.searchsorted(bin_edges(n_bins, conf.dtype), conf, side="right") - 1
    return np.clip(idx, 0, n_bins - 1).astype(np.int64)


def reliability_data(confidence, correct, n_bins: int = 10) -> dict:
    """Per-bin accuracy, mean confidence and count for a reliability diagram.

    Parameters
    ----------
    confidence : array_like, shape (N,)
        Confidence of each prediction, in ``[0, 1]``.
    correct : array_like of bool, shape (N,)
        Whether each prediction was right.
    n_bins : int
        Number of equal-width bins over ``[0, 1]`` (paper: ``M = 10``).

    Returns
    -------
    dict
        ``"edges"`` (M+1,), ``"accuracy"`` (M,), ``"confidence"`` (M,) -- NaN for empty
        bins -- and ``"count"`` (M,) int. Bins are ``[lo, hi)``, the last ``[lo, 1]``.

    Raises
    ------
    ValueError
        Empty input, mismatched lengths, confidences outside ``[0, 1]`` or NaN.
    """
    conf, corr = _validate(confidence, correct, n_bins)
    idx = bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=corr.astype(np.float64), minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf.astype(np.float64), minlength=n_bins) / count
    return {
        "edges": bin_edges(n_bins),
        "accuracy": np.where(count > 0, acc, np.nan),
        "confidence": np.where(count > 0, mean_conf, np.nan),
        "count": count.astype(np.int64),
    }


def calibration_errors(confidence, correct, n_bins: int = 10) -> tuple[float, float]:
    """Return the expected and maximum calibration error (Naeini et al. 2015; Eqs. 5-6).

    ``ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|`` and ``MCE = max_m |acc(B_m) -
    conf(B_m)|`` over non-empty bins.

    Parameters
    ----------
    confidence : array_like, shape (N,)
        Confidence of each prediction, in ``[0, 1]``.
    correct : array_like of bool, shape (N,)
        Whether each prediction was right.
    n_bins : int
        Number of equal-width bins (paper: 10). Bins are ``[k/M, (k+1)/M)`` with exact
        edges (index ``floor(c * M)``, see the module docstring); the last bin is closed
        so that a confidence of exactly 1.0 belongs to it (``torchmetrics`` gives 1.0 a
        bin of its own; identical results for float32 confidences < 1 and ``M = 10``).

    Returns
    -------
    (float, float)
        ``(ECE, MCE)``, both in ``[0, 1]``.
    """
    rel = reliability_data(confidence, correct, n_bins)
    filled = rel["count"] > 0
    gap = np.abs(rel["accuracy"][filled] - rel["confidence"][filled])
    weights = rel["count"][filled] / rel["count"].sum()
    return float(np.sum(weights * gap)), float(gap.max())
