"""Differential count per sample: class percentages with Wilson 95 % confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["wilson_interval", "differential_counts"]


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``.

    ``(k + z²/2) / (n + z²) ± z / (n + z²) * sqrt(k (n - k) / n + z²/4)``
    (Wilson 1927). Unlike the normal (Wald) interval it stays inside [0, 1] and does not
    collapse to a point at ``k = 0`` or ``k = n``, which matters for rare classes
    (e.g. eosinophils at a few percent). The bounds are exactly 0 at ``k = 0`` and exactly
    1 at ``k = n``.

    Parameters
    ----------
    k : int
        Successes (cells of the class), ``0 <= k <= n``.
    n : int
        Trials (cells counted), ``>= 0``.
    z : float
        Standard-normal quantile; 1.96 gives a 95 % interval.

    Returns
    -------
    (float, float)
        Lower and upper bound as proportions in [0, 1]; ``(nan, nan)`` when ``n == 0``.

    Raises
    ------
    ValueError
        Negative or non-integer counts, ``k > n``, or ``z <= 0``.
    """
    if float(k) != int(k) or float(n) != int(n):
        raise ValueError(f"counts must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive number, got {z!r}")
    if n == 0:
        return math.nan, math.nan
    z2 = z * z
    centre = (k + z2 / 2.0) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4.0)
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def _mask(name: str, values: Any, n: int) -> np.ndarray:
    a = np.asarray(values)
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({n},)")
    if a.dtype.kind != "b":
        if a.dtype.kind in "iu" and bool(np.isin(a, (0, 1)).all()):
            return a.astype(bool)
        raise ValueError(f"{name} must be boolean, got {a.dtype}")
    return a


def differential_counts(
    pred_class: np.ndarray,
    sample: np.ndarray,
    class_names: Sequence[str],
    *,
    include: np.ndarray,
    flagged: np.ndarray | None = None,
    excluded_reasons: Mapping[str, np.ndarray] | None = None,
    z: float = 1.96,
) -> dict[str, dict[str, Any]]:
    """Count the predicted classes of each sample as percentages with Wilson intervals.

    Only cells with ``include`` True are counted (the caller passes QC-passed cells that are
    not excluded as out-of-distribution). A sample whose cells are all excluded still
    appears, with ``n`` 0 and NaN percentages and intervals.

    Parameters
    ----------
    pred_class : numpy.ndarray
        ``(N,)`` int predicted class codes, indices into ``class_names``; only included
        cells must hold a valid code (others may be -1).
    sample : numpy.ndarray
        ``(N,)`` sample of each cell (the run, or the file name when there is no run);
        converted to ``str``.
    class_names : sequence of str
        Class names in output order.
    include : numpy.ndarray
        ``(N,)`` bool: the cell counts in the differential.
    flagged : numpy.ndarray, optional
        ``(N,)`` bool: the cell is flagged for review (e.g. low confidence or in the
        mislabel queue). ``_flagged`` counts flagged cells *among the included ones*, i.e.
        how many of the counted cells a person should still check.
    excluded_reasons : dict of str to numpy.ndarray, optional
        Reason (e.g. ``"qc"``, ``"ood"``) -> ``(N,)`` bool mask of cells excluded for it.
        ``_excluded`` counts each mask within the sample as given; pass disjoint masks if
        the counts should add up.
    z : float
        Normal quantile of the intervals (1.96: 95 %).

    Returns
    -------
    dict
        ``{sample: {class: {"percent", "ci_low", "ci_high", "n"}, "_total": n counted,
        "_flagged": n, "_excluded": {reason: n}}}``, samples sorted by name, classes in
        ``class_names`` order. ``percent``, ``ci_low`` and ``ci_high`` are in percent
        (0..100); ``n`` is the count of the class.

    Raises
    ------
    ValueError
        Arrays of different lengths, non-boolean masks, duplicate class names, or an
        included cell whose class code is outside ``0..len(class_names)-1``.
    """
    pred = np.asarray(pred_class)
    if pred.ndim != 1:
        raise ValueError(f"pred_class has shape {pred.shape}, expected (N,)")
    n = pred.shape[0]
    if pred.dtype.kind not in "iu" and n:
        raise ValueError(f"pred_class must hold integer class codes, got {pred.dtype}")
    names = [str(c) for c in class_names]
    if len(set(names)) != len(names) or any(c.startswith("_") for c in names):
        raise ValueError(f"class names must be unique and not start with '_': {names}")
    samples = np.asarray(sample)
    if samples.shape != (n,):
        raise ValueError(f"sample has shape {samples.shape}, expected ({n},)")
    samples = samples.astype(str)
    inc = _mask("include", include, n)
    flag = np.zeros(n, bool) if flagged is None else _mask("flagged", flagged, n)
    reasons = {
        str(r): _mask(f"excluded_reasons[{r!r}]", m, n)
        for r, m in (excluded_reasons or {}).items()
    }
    codes = pred[inc].astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= len(names)):
        raise ValueError(
            f"included cells have class codes outside 0..{len(names) - 1} "
            f"(e.g. {int(codes[(codes < 0) | (codes >= len(names))][0])})"
        )
    out: dict[str, dict[str, Any]] = {}
    for s in np.unique(samples).tolist():
        in_s = samples == s
        counted = in_s & inc
        total = int(counted.sum())
        counts = np.bincount(pred[counted].astype(np.int64), minlength=len(names))
        row: dict[str, Any] = {}
        for name, k in zip(names, counts.tolist(), strict=True):
            lo, hi = wilson_interval(k, total, z)
            row[name] = {
                "percent": 100.0 * k / total if total else math.nan,
                "ci_low": 100.0 * lo,
                "ci_high": 100.0 * hi,
                "n": int(k),
            }
        row["_total"] = total
        row["_flagged"] = int((counted & flag).sum())
        row["_excluded"] = {r: int((in_s & m).sum()) for r, m in reasons.items()}
        out[s] = row
    return out
