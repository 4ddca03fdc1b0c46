"""``hemalens predict``: frequentist + MC-dropout predictions, calibrated, into the project."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.calibrate import (
    StdConfidence,
    confidence_measures,
    mc_dropout_logits,
    mc_softmax,
    mc_summary,
    predict_logits,
    softmax_t,
)
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.models.store import load_model
from hemalens.engine.project import Project
from hemalens.engine.review import write_predictions
from hemalens.engine.review.ood_detector import OODDetector
from hemalens.engine.workflows.calibration import ood_scores

#: The measure whose class and confidence a person sees: the MC-dropout mean, temperature
#: scaled on the validation split (best calibrated in our evaluations and the paper's).
DEFAULT_MEASURE = "mc_mean_ts"
CHUNK = 4096


def predict_project(
    project_path: str | Path,
    *,
    model_name: str | None = None,
    passes: int = 100,
    measure: str = DEFAULT_MEASURE,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict every object of a project with a stored model and save the predictions.

    With a model that carries an out-of-distribution detector (every model trained since
    issue 13) the predictions get ``ood_score`` and the ``ood`` flag
    (``ood_score > threshold``, the threshold keeping 95 % of validation cells).

    Parameters
    ----------
    project_path : str or Path
        The project; it must hold a trained model.
    model_name : str, optional
        Which model; the active one when omitted.
    passes : int
        MC-dropout passes per cell (paper: 100).
    measure : str
        Confidence measure behind ``predicted``/``confidence`` (see
        :func:`~hemalens.engine.calibrate.confidence_measures`).
    seed : int
        Seed of the dropout masks (predictions are reproducible).
    progress : Progress, optional
        Progress over cells; cancelling writes nothing.

    Returns
    -------
    dict
        ``{"model", "cells", "passes", "measure", "seconds", "cells_per_s",
        "predicted": {class: n}, "ood": n flagged (None without a detector)}``.
    """
    t0 = time.perf_counter()
    model, meta = load_model(project_path, model_name)
    calibration = meta["extra"].get("calibration") or {}
    std_map = StdConfidence.from_dict(calibration["std_map"]) if "std_map" in calibration else None
    detector = OODDetector.from_model(meta)
    with Project.open(project_path) as project:
        n = project.n_cells
        if n == 0:
            raise ProjectError(project_path, "has no cells to predict")
        classes = list(meta["class_names"])
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, CHUNK):
            checkpoint(progress)
            idx = np.arange(start, min(n, start + CHUNK))
            images = project.images(idx)
            logits = predict_logits(model, images)
            mc_logits = mc_dropout_logits(model, images, passes=passes, seed=seed + start)
            probs = mc_softmax(mc_logits)
            summary = mc_summary(probs)
            measures = confidence_measures(
                logits,
                summary,
                temperature=calibration.get("temperature"),
                mc_temperature=calibration.get("mc_temperature"),
                std_map=std_map,
                mc_logits=mc_logits,
            )
            if measure not in measures:
                raise ValueError(f"unknown or unavailable measure {measure!r}; "
                                 f"available: {', '.join(measures)}")
            freq = softmax_t(logits, calibration.get("temperature") or 1.0)
            chunk = {
                "predicted": measures[measure]["pred"].astype(np.int16),
                "confidence": measures[measure]["confidence"].astype(np.float32),
                "probs": freq.astype(np.float32),
                "mc_mean": summary["mean"].astype(np.float32),
                "mc_median": summary["median"].astype(np.float32),
                "mc_std": summary["std"].astype(np.float32),
            }
            for name, m in measures.items():
                chunk[f"conf_{name}"] = m["confidence"].astype(np.float32)
            if detector is not None:
                score = ood_scores(model, detector, images, measures)
                chunk["ood_score"] = score.astype(np.float32)
                chunk["ood"] = detector.flag(score)
            for key, value in chunk.items():
                parts.setdefault(key, []).append(value)
            if progress is not None:
                progress.set_progress(int(idx[-1]) + 1, n)
    columns = {key: np.concatenate(values) for key, values in parts.items()}
    name = meta["name"]
    write_predictions(project_path, name, columns, {
        "model": name,
        "measure": measure,
        "passes": passes,
        "seed": seed,
        "temperature": calibration.get("temperature"),
        "mc_temperature": calibration.get("mc_temperature"),
        "class_names": classes,
        "ood_threshold": None if detector is None else detector.threshold,
    })
    seconds = time.perf_counter() - t0
    counts = np.bincount(columns["predicted"], minlength=len(classes))
    return {
        "model": name,
        "cells": n,
        "passes": passes,
        "measure": measure,
        "seconds": round(seconds, 3),
        "cells_per_s": round(n / seconds, 1),
        "predicted": {c: int(k) for c, k in zip(classes, counts, strict=True)},
        "ood": int(columns["ood"].sum()) if "ood" in columns else None,
    }
