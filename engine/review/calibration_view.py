"""What the calibration panel shows: reliability before and after temperature scaling.

Computed from stored predictions (no model is run) on the model's test split, judged
against the cells' *current* labels (so a curator's corrections count), per confidence
family: the softmax (``freq`` -> ``freq_ts``), the MC-dropout mean (``mc_mean`` ->
``mc_mean_ts``), the MC median, and the MC standard deviation (the raw ``1 - 2 std``
against its isotonic calibration ``mc_std``). ECE and MCE use 10 equal-width bins
(:mod:`hemalens.engine.calibrate.metrics`). The box-plot variant of paper 1 (Fig. 3)
shows the spread of each bin's accuracy; with one model we draw it over bootstrap
resamples of the test cells (paper 1 draws it over 15 training runs) and say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hemalens.engine.calibrate.metrics import calibration_errors, reliability_data

__all__ = ["FAMILIES", "calibration_summary"]

#: family -> (uncalibrated column, calibrated column, column whose argmax is the class)
FAMILIES: dict[str, tuple[str, str | None, str]] = {
    "softmax": ("conf_freq", "conf_freq_ts", "probs"),
    "MC mean": ("conf_mc_mean", "conf_mc_mean_ts", "mc_mean"),
    "MC median": ("conf_mc_median", None, "mc_median"),
    "MC std": ("mc_std_raw", "conf_mc_std", "mc_mean"),
}


def _column(columns: dict[str, np.ndarray], name: str, argmax_of: str) -> np.ndarray | None:
    if name == "mc_std_raw":  # the uncalibrated std confidence: 1 - 2 std of the class
        std, mean = columns.get("mc_std"), columns.get(argmax_of)
        if std is None or mean is None or std.ndim != 2:
            return None
        pred = np.argmax(mean, axis=1)
        return np.clip(1.0 - 2.0 * std[np.arange(len(pred)), pred], 0.0, 1.0)
    col = columns.get(name)
    return None if col is None else np.asarray(col, np.float64)


def calibration_summary(
    columns: dict[str, np.ndarray],
    labels: np.ndarray,
    cells: np.ndarray,
    *,
    n_bins: int = 10,
    bootstrap: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Reliability data, ECE and MCE per confidence family, before and after calibration.

    Parameters
    ----------
    columns : dict of str to numpy.ndarray
        Stored prediction columns (``probs``, ``mc_mean``, ``mc_median``, ``mc_std``,
        ``conf_<measure>``), one row per project cell.
    labels : numpy.ndarray
        ``(N,)`` true class of every project cell in the *model's* class coding (-1: no
        label).
    cells : numpy.ndarray
        The cells to judge (e.g. the model's test split).
    n_bins : int
        Equal-width bins.
    bootstrap : int
        Resamples for the box-plot variant (0: none).
    seed : int
        Seed of the resamples.

    Returns
    -------
    dict
        ``{"n": cells used, "families": {family: {"before": reliability, "after":
        reliability or None, "ece", "mce", "ece_ts", "mce_ts", "boxes": {"before": (B,
        n_bins) accuracies, "after": ...}}}}``.
    """
    cells = np.asarray(cells, np.int64)
    cells = cells[(cells >= 0) & (cells < len(labels))]
    cells = cells[np.asarray(labels)[cells] >= 0]
    out: dict[str, Any] = {"n": int(cells.size), "families": {}}
    if cells.size == 0:
        return out
    y = np.asarray(labels, np.int64)[cells]
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, cells.size, cells.size) for _ in range(bootstrap)]
    for family, (raw_name, cal_name, argmax_of) in FAMILIES.items():
        probs = columns.get(argmax_of)
        raw = _column(columns, raw_name, argmax_of)
        if probs is None or probs.ndim != 2 or raw is None:
            continue
        correct = np.argmax(probs[cells], axis=1) == y
        entry: dict[str, Any] = {}
        for key, name in (("", raw_name), ("_ts", cal_name)):
            conf = None if name is None else _column(columns, name, argmax_of)
            if conf is None:
                entry["after" if key else "before"] = None
                continue
            c = np.clip(np.nan_to_num(conf[cells], nan=0.0), 0.0, 1.0)
            rel = reliability_data(c, correct, n_bins)
            ece, mce = calibration_errors(c, correct, n_bins)
            entry["after" if key else "before"] = rel
            entry[f"ece{key}"], entry[f"mce{key}"] = float(ece), float(mce)
            boxes = np.full((len(resamples), n_bins), np.nan)
            for b, idx in enumerate(resamples):
                boxes[b] = reliability_data(c[idx], correct[idx], n_bins)["accuracy"]
            entry.setdefault("boxes", {})["after" if key else "before"] = boxes
        out["families"][family] = entry
    return out
