"""Fit every calibration of a trained model on its validation split, in one place."""

from __future__ import annotations

from typing import Any

import numpy as np

from hemalens.engine.calibrate import (
    fit_calibrators,
    fit_temperature_probs,
    mc_dropout_probs,
    mc_summary,
    predict_logits,
)
from hemalens.engine.jobs import Progress


def fit_calibration(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    passes: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit temperatures and the std-based confidence map on validation cells.

    Parameters
    ----------
    model : Classifier
        A trained model.
    images : numpy.ndarray
        ``(N, H, W)`` validation patches in [0, 1].
    labels : numpy.ndarray
        ``(N,)`` class codes.
    passes : int
        MC-dropout passes.
    seed : int
        Seed of the dropout masks.
    progress : Progress, optional
        Forwarded to the MC sampling.

    Returns
    -------
    dict
        JSON-ready: ``temperature`` (frequentist logits), ``mc_temperature`` (MC mean),
        ``median_temperature`` (renormalised MC median, used by evaluation only),
        ``std_map`` (:class:`~hemalens.engine.calibrate.StdConfidence` as a dict),
        ``passes``, ``n``.
    """
    logits = predict_logits(model, images)
    probs = mc_dropout_probs(model, images, passes=passes, seed=seed, progress=progress)
    fitted = fit_calibrators(logits, probs, labels)
    return {
        "temperature": float(fitted["temperature"]),
        "mc_temperature": float(fitted["mc_temperature"]),
        "median_temperature": float(fit_temperature_probs(mc_summary(probs)["median"], labels)),
        "std_map": fitted["std_map"].to_dict(),
        "passes": passes,
        "n": int(len(labels)),
    }
