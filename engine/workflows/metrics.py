"""Scores of a model on a labelled split: paper Tables 1 and 2.

Table 1 is classification per inference mode; Table 2 is calibration per confidence
measure, before and after calibration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from hemalens.engine.calibrate import (
    StdConfidence,
    calibration_errors,
    confidence_measures,
    mc_dropout_probs,
    mc_summary,
    predict_logits,
    temperature_scale_probs,
)

#: Table 1 inference modes: frequentist softmax, MC-dropout mean and median.
INFERENCE = ("freq", "mc_mean", "mc_median")
#: Table 2: each measure's uncalibrated and calibrated variant.
CALIBRATION_PAIRS = {
    "freq": ("freq", "freq_ts"),
    "mc_mean": ("mc_mean", "mc_mean_ts"),
    "mc_median": ("mc_median", "mc_median_ts"),
    "mc_std": ("mc_std_raw", "mc_std"),
}


def classification_scores(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Macro precision, recall, F1 and accuracy (paper Table 1)."""
    p, r, f, _ = precision_recall_fscore_support(labels, pred, average="macro", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f),
            "accuracy": float(accuracy_score(labels, pred))}


def all_measures(
    logits: np.ndarray, probs: np.ndarray, calibration: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Every confidence measure of Table 2, calibrated and not.

    Adds to :func:`~hemalens.engine.calibrate.confidence_measures` two variants used
    only for evaluation: ``mc_median_ts`` (renormalised MC median, temperature scaled with
    its own validation temperature) and ``mc_std_raw``, the uncalibrated std-based
    confidence ``1 - 2*std`` of the predicted class (the MC std of a probability is at
    most 0.5, so this maps it onto [0, 1]; the calibrated ``mc_std`` replaces it by the
    isotonic map fitted on validation).
    """
    std_map = StdConfidence.from_dict(calibration["std_map"])
    summary = mc_summary(probs)  # once: the per-class median over passes is the costly part
    measures = confidence_measures(
        logits, summary, temperature=calibration["temperature"],
        mc_temperature=calibration["mc_temperature"], std_map=std_map,
    )
    median_ts = temperature_scale_probs(summary["median"], calibration["median_temperature"])
    measures["mc_median_ts"] = {"pred": median_ts.argmax(1), "confidence": median_ts.max(1)}
    pred = summary["mean"].argmax(1)
    std_pred = summary["std"][np.arange(len(pred)), pred]
    measures["mc_std_raw"] = {"pred": pred, "confidence": np.clip(1 - 2 * std_pred, 0, 1)}
    return measures


def split_metrics(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    calibration: dict[str, Any],
    *,
    passes: int = 100,
    seed: int = 0,
    keep_measures: bool = False,
) -> dict[str, Any]:
    """Score a model on one labelled split.

    Parameters
    ----------
    model : Classifier
        A trained model.
    images, labels : numpy.ndarray
        The split's patches and class codes.
    calibration : dict
        From :func:`~hemalens.engine.workflows.calibration.fit_calibration`.
    passes, seed : int
        MC-dropout passes and seed.
    keep_measures : bool
        Also return the per-cell measures (for reliability diagrams) under
        ``"measures"`` (not JSON-ready).

    Returns
    -------
    dict
        ``{"table1": {mode: {precision, recall, f1, accuracy}},
        "table2": {measure: {"ece", "mce", "ece_ts", "mce_ts"}}, "n"}``.
    """
    logits = predict_logits(model, images)
    probs = mc_dropout_probs(model, images, passes=passes, seed=seed)
    measures = all_measures(logits, probs, calibration)
    table1 = {mode: classification_scores(measures[mode]["pred"], labels) for mode in INFERENCE}
    table2 = {}
    for family, (raw, cal) in CALIBRATION_PAIRS.items():
        row = {}
        for key, measure in (("", raw), ("_ts", cal)):
            m = measures[measure]
            ece, mce = calibration_errors(m["confidence"], m["pred"] == labels)
            row[f"ece{key}"], row[f"mce{key}"] = float(ece), float(mce)
        table2[family] = row
    out: dict[str, Any] = {"table1": table1, "table2": table2, "n": int(len(labels))}
    if keep_measures:
        out["measures"] = measures
    return out
