"""Review signals: differential counts, the mislabel queue, OOD statistics, predictions, report.

Paper 1 (Röhrl et al. 2023) §5: what a person reviewing a classified sample needs beyond
the predictions themselves.
"""

from __future__ import annotations

# Imported on first use: the GUI imports light parts of this package at start-up
# and must not pay for h5py, OpenCV or scikit-image before its window shows.
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hemalens.engine.review.differential import differential_counts, wilson_interval
    from hemalens.engine.review.mislabel import mislabel_queue, queue_metrics
    from hemalens.engine.review.ood import OOD_SETS, ood_sets, ood_statistics, render_phase_patch
    from hemalens.engine.review.predictions import (
        PREDICTION_COLUMNS,
        active_model_name,
        read_predictions,
        write_predictions,
    )
    from hemalens.engine.review.report import write_report

_WHERE = {
    "differential_counts": "hemalens.engine.review.differential",
    "wilson_interval": "hemalens.engine.review.differential",
    "mislabel_queue": "hemalens.engine.review.mislabel",
    "queue_metrics": "hemalens.engine.review.mislabel",
    "OOD_SETS": "hemalens.engine.review.ood",
    "ood_sets": "hemalens.engine.review.ood",
    "ood_statistics": "hemalens.engine.review.ood",
    "render_phase_patch": "hemalens.engine.review.ood",
    "PREDICTION_COLUMNS": "hemalens.engine.review.predictions",
    "active_model_name": "hemalens.engine.review.predictions",
    "read_predictions": "hemalens.engine.review.predictions",
    "write_predictions": "hemalens.engine.review.predictions",
    "write_report": "hemalens.engine.review.report",
}

__all__ = [
    "OOD_SETS",
    "PREDICTION_COLUMNS",
    "active_model_name",
    "differential_counts",
    "mislabel_queue",
    "ood_sets",
    "ood_statistics",
    "queue_metrics",
    "read_predictions",
    "render_phase_patch",
    "wilson_interval",
    "write_predictions",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
