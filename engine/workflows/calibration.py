"""Fit every calibration of a trained model on its validation split, in one place."""

from __future__ import annotations

from typing import Any

import numpy as np

from hemalens.engine.calibrate import (
    StdConfidence,
    confidence_measures,
    fit_calibrators,
    fit_temperature_probs,
    mc_dropout_probs,
    mc_summary,
    model_features,
    predict_logits,
)
from hemalens.engine.jobs import Progress
from hemalens.engine.review.ood_detector import OODDetector, fit_ood_detector

#: The calibrated measure whose confidence enters the OOD score.
OOD_MEASURE = "mc_mean_ts"


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


def calibrated_measures(
    model: Any,
    images: np.ndarray,
    calibration: dict[str, Any],
    *,
    passes: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Every confidence measure of a model on some patches, with its stored calibration.

    Parameters
    ----------
    model : Classifier
        A trained model.
    images : numpy.ndarray
        ``(N, H, W)`` patches in [0, 1].
    calibration : dict
        :func:`fit_calibration`'s result (the model's ``extra["calibration"]``).
    passes, seed : int
        MC-dropout passes and the seed of their masks.
    progress : Progress, optional
        Forwarded to the MC sampling.

    Returns
    -------
    dict
        :func:`~hemalens.engine.calibrate.confidence_measures`' result.
    """
    from hemalens.engine.calibrate import mc_dropout_logits, mc_softmax

    std_map = (StdConfidence.from_dict(calibration["std_map"])
               if "std_map" in calibration else None)
    mc_logits = mc_dropout_logits(model, images, passes=passes, seed=seed, progress=progress)
    return confidence_measures(
        predict_logits(model, images), mc_softmax(mc_logits),
        temperature=calibration.get("temperature"),
        mc_temperature=calibration.get("mc_temperature"),
        std_map=std_map, mc_logits=mc_logits,
    )


def ood_confidence(measures: dict[str, dict[str, np.ndarray]], measure: str) -> np.ndarray:
    """Return the confidence the OOD detector uses (``measure``, else the MC mean)."""
    m = measures.get(measure) or measures.get("mc_mean") or measures["freq"]
    return np.asarray(m["confidence"], np.float64)


def fit_ood(
    model: Any,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    calibration: dict[str, Any],
    *,
    passes: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
) -> OODDetector:
    """Fit the out-of-distribution detector of a trained, calibrated model.

    Feature statistics (class means, Ledoit-Wolf covariance, the k-NN bank) come from the
    training cells, the p-value references and the flag threshold (95 % of cells kept) from
    the validation cells (:func:`~hemalens.engine.review.ood_detector.fit_ood_detector`).

    Parameters
    ----------
    model : Classifier
        The trained model.
    train_images, train_labels : numpy.ndarray
        Training patches and class codes.
    val_images : numpy.ndarray
        Validation patches.
    calibration : dict
        :func:`fit_calibration`'s result.
    passes, seed : int
        MC-dropout passes and seed for the validation confidences.
    progress : Progress, optional
        Forwarded to the MC sampling.

    Returns
    -------
    OODDetector
    """
    tr_pen, tr_trunk = model_features(model, train_images)
    va_pen, va_trunk = model_features(model, val_images)
    measures = calibrated_measures(model, val_images, calibration, passes=passes, seed=seed,
                                   progress=progress)
    return fit_ood_detector(tr_pen, tr_trunk, train_labels, va_pen, va_trunk,
                            ood_confidence(measures, OOD_MEASURE), measure=OOD_MEASURE,
                            seed=seed)


def ood_scores(
    model: Any,
    detector: OODDetector,
    images: np.ndarray,
    measures: dict[str, dict[str, np.ndarray]],
) -> np.ndarray:
    """Per-cell ``ood_score`` of patches whose confidence measures are already computed.

    Parameters
    ----------
    model : Classifier
        The model the detector was fitted with.
    detector : OODDetector
        From :meth:`OODDetector.from_model`.
    images : numpy.ndarray
        ``(N, H, W)`` patches.
    measures : dict
        Their :func:`calibrated_measures`.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64; ``detector.flag`` turns it into the ``ood`` flag.
    """
    pen, trunk = model_features(model, images)
    return detector.score(pen, trunk, ood_confidence(measures, detector.measure))
