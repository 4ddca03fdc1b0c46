"""The one place where model outputs become the confidence measures of paper Table 2.

Measures (each gives a predicted class and a confidence per cell):

``freq``        softmax of the frequentist logits: argmax, max probability.
``freq_ts``     the same, temperature-scaled (``temperature``; same argmax as ``freq``).
``mc_mean``     mean of the T MC-dropout softmax outputs: argmax, max.
``mc_mean_ts``  the MC mean temperature-scaled, ``softmax(log(mean) / mc_temperature)``.
``mc_median``   per-class median over the passes, renormalised to sum 1: argmax, max.
``mc_std``      predicted class = argmax of the MC mean; confidence = ``std_map(s)`` with
                ``s`` the MC standard deviation of that class's probability
                (:class:`~hemalens.engine.calibrate.std_confidence.StdConfidence`).

Measures whose inputs are missing are omitted: ``freq*`` without ``freq_logits``,
``mc_*`` without ``mc_probs``, ``*_ts`` without their temperature, ``mc_std`` without a
fitted ``std_map``. Fit the calibrators on the validation split with
:func:`fit_calibrators`, never on the cells being evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hemalens.engine.calibrate.inference import mc_summary
from hemalens.engine.calibrate.std_confidence import StdConfidence
from hemalens.engine.calibrate.temperature import (
    fit_temperature,
    fit_temperature_probs,
    softmax_t,
    temperature_scale_probs,
)

MEASURES = ("freq", "freq_ts", "mc_mean", "mc_mean_ts", "mc_median", "mc_std")
#: MC scores that rank cells by how in-distribution they look but are not probabilities.
SCORES = ("mc_logit_std",)


def _summary(mc_probs) -> dict[str, np.ndarray]:
    if isinstance(mc_probs, Mapping):
        missing = {"mean", "median", "std"} - set(mc_probs)
        if missing:
            raise ValueError(f"MC summary lacks {sorted(missing)}")
        return {k: np.asarray(mc_probs[k], dtype=np.float64) for k in ("mean", "median", "std")}
    return mc_summary(mc_probs)


def _entry(probs: np.ndarray) -> dict[str, np.ndarray]:
    pred = probs.argmax(axis=1)
    return {"pred": pred.astype(np.int64), "confidence": probs[np.arange(len(pred)), pred]}


def confidence_measures(
    freq_logits=None,
    mc_probs=None,
    labels=None,
    *,
    temperature: float | None = None,
    mc_temperature: float | None = None,
    std_map: StdConfidence | None = None,
    mc_logits=None,
) -> dict[str, dict]:
    """Every confidence measure of paper Table 2 from one model's outputs.

    With ``mc_logits`` one more MC measure is added, ``mc_logit_std``: the same class as
    ``mc_mean``, with score ``1 / (1 + s)`` where ``s`` is the MC standard deviation of
    that class's logit. It is an in-distribution score, not a calibrated probability (so
    Table 2 leaves it out): far out-of-distribution inputs (noise, digits) drive a ReLU
    network to saturated, confident probabilities whose MC spread is ~0, while the
    spread of their logits, which dropout perturbs in proportion to the activations,
    stays large.

    Parameters
    ----------
    freq_logits : array_like, shape (N, K), optional
        Deterministic logits (:func:`~hemalens.engine.calibrate.inference.predict_logits`).
    mc_probs : array_like (T, N, K) or mapping, optional
        MC-dropout probabilities, or their :func:`mc_summary` (``mean``/``median``/``std``).
    labels : array_like of int, shape (N,), optional
        True classes; when given, each measure also gets ``"correct"`` (bool, (N,)).
    temperature : float, optional
        Temperature for the frequentist logits (``freq_ts``).
    mc_temperature : float, optional
        Temperature for the MC mean (``mc_mean_ts``).
    std_map : StdConfidence, optional
        Fitted std -> confidence map (``mc_std``); omitted when None or unfitted.
    mc_logits : array_like (T, N, K), optional
        The MC-dropout logits behind ``mc_probs`` (``mc_logit_std``).

    Returns
    -------
    dict
        Measure name (see :data:`MEASURES`, in that order) -> ``{"pred": (N,) int64,
        "confidence": (N,) float64[, "correct": (N,) bool]}``.
    """
    out: dict[str, dict] = {}
    n: int | None = None
    if freq_logits is not None:
        z = np.asarray(freq_logits, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"freq_logits must have shape (N, K), got {z.shape}")
        n = z.shape[0]
        out["freq"] = _entry(softmax_t(z))
        if temperature is not None:
            out["freq_ts"] = _entry(softmax_t(z, temperature))
    if mc_probs is not None:
        s = _summary(mc_probs)
        if n is not None and s["mean"].shape[0] != n:
            raise ValueError(
                f"freq_logits and mc_probs differ in cells: {n} vs {s['mean'].shape[0]}"
            )
        n = s["mean"].shape[0]
        out["mc_mean"] = _entry(s["mean"])
        if mc_temperature is not None:
            out["mc_mean_ts"] = _entry(temperature_scale_probs(s["mean"], mc_temperature))
        out["mc_median"] = _entry(s["median"])
        if std_map is not None and std_map.fitted:
            pred = out["mc_mean"]["pred"]
            std_pred = s["std"][np.arange(n), pred]
            out["mc_std"] = {"pred": pred.copy(), "confidence": std_map(std_pred)}
        if mc_logits is not None:
            zl = np.asarray(mc_logits, dtype=np.float64)
            if zl.ndim != 3 or zl.shape[1] != n:
                raise ValueError(f"mc_logits must have shape (T, {n}, K), got {zl.shape}")
            pred = out["mc_mean"]["pred"]
            spread = zl.std(axis=0)[np.arange(n), pred]
            out["mc_logit_std"] = {"pred": pred.copy(), "confidence": 1.0 / (1.0 + spread)}
    if labels is not None and n is not None:
        y = np.asarray(labels).ravel()
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {y.shape}")
        for entry in out.values():
            entry["correct"] = entry["pred"] == y
    return {name: out[name] for name in (*MEASURES, *SCORES) if name in out}


def fit_calibrators(freq_logits=None, mc_probs=None, labels=None) -> dict:
    """Fit every calibrator of :func:`confidence_measures` on the validation split.

    Parameters
    ----------
    freq_logits : array_like, shape (N, K), optional
        Validation logits -> ``temperature`` (:func:`fit_temperature`).
    mc_probs : array_like (T, N, K) or mapping, optional
        Validation MC probabilities or summary -> ``mc_temperature`` (on the MC mean) and
        ``std_map`` (isotonic on the predicted class's std vs correctness of the MC mean).
    labels : array_like of int, shape (N,)
        Validation labels.

    Returns
    -------
    dict
        ``{"temperature", "mc_temperature", "std_map"}`` (None where inputs were missing),
        ready to pass as keyword arguments to :func:`confidence_measures`.
    """
    if labels is None:
        raise ValueError("fitting calibrators needs the validation labels")
    y = np.asarray(labels)
    out: dict = {"temperature": None, "mc_temperature": None, "std_map": None}
    if freq_logits is not None:
        out["temperature"] = fit_temperature(freq_logits, y)
    if mc_probs is not None:
        s = _summary(mc_probs)
        out["mc_temperature"] = fit_temperature_probs(s["mean"], y)
        pred = s["mean"].argmax(axis=1)
        if y.shape != pred.shape:
            raise ValueError(f"labels must have shape {pred.shape}, got {y.shape}")
        std_pred = s["std"][np.arange(len(pred)), pred]
        out["std_map"] = StdConfidence().fit(std_pred, pred == y)
    return out
