"""Inference and confidence calibration (paper 1, §3.2 and §4.2).

- :mod:`.inference`: frequentist logits and MC-dropout probabilities (trunk cached, only
  dropout stochastic), per-cell summaries (mean, renormalised median, std);
- :mod:`.temperature`: temperature scaling fitted by a bounded search over ``log T``;
- :mod:`.std_confidence`: the std-based confidence (isotonic, non-increasing map);
- :mod:`.metrics`: ECE/MCE over equal-width bins, reliability-diagram data;
- :mod:`.measures`: every confidence measure of paper Table 2, and their calibrators;
- :mod:`.plots`: reliability diagrams and their box-plot variant over runs (PNG).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, imported on first use (torch only when needed)
    from hemalens.engine.calibrate.inference import (
        DROPOUT_TYPES,
        mc_dropout_logits,
        mc_dropout_probs,
        mc_softmax,
        mc_summary,
        model_features,
        predict_logits,
    )
    from hemalens.engine.calibrate.measures import MEASURES, confidence_measures, fit_calibrators
    from hemalens.engine.calibrate.metrics import bin_index, calibration_errors, reliability_data
    from hemalens.engine.calibrate.plots import plot_reliability, plot_reliability_runs
    from hemalens.engine.calibrate.std_confidence import StdConfidence
    from hemalens.engine.calibrate.temperature import (
        fit_temperature,
        fit_temperature_probs,
        log_probs,
        nll,
        softmax_t,
        temperature_scale_probs,
    )

#: public name -> submodule: importing this package imports none of them, so that the
#: numpy-only parts (metrics, temperature) do not pull in torch (inference).
_EXPORTS = {
    "DROPOUT_TYPES": "inference",
    "MEASURES": "measures",
    "StdConfidence": "std_confidence",
    "bin_index": "metrics",
    "calibration_errors": "metrics",
    "confidence_measures": "measures",
    "fit_calibrators": "measures",
    "fit_temperature": "temperature",
    "fit_temperature_probs": "temperature",
    "log_probs": "temperature",
    "mc_dropout_logits": "inference",
    "mc_dropout_probs": "inference",
    "mc_softmax": "inference",
    "mc_summary": "inference",
    "model_features": "inference",
    "nll": "temperature",
    "plot_reliability": "plots",
    "plot_reliability_runs": "plots",
    "predict_logits": "inference",
    "reliability_data": "metrics",
    "softmax_t": "temperature",
    "temperature_scale_probs": "temperature",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

__all__ = [
    "DROPOUT_TYPES",
    "MEASURES",
    "StdConfidence",
    "bin_index",
    "calibration_errors",
    "confidence_measures",
    "fit_calibrators",
    "fit_temperature",
    "fit_temperature_probs",
    "log_probs",
    "mc_dropout_logits",
    "mc_dropout_probs",
    "mc_softmax",
    "mc_summary",
    "nll",
    "model_features",
    "plot_reliability",
    "plot_reliability_runs",
    "predict_logits",
    "reliability_data",
    "softmax_t",
    "temperature_scale_probs",
]
