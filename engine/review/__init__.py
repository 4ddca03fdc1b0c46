"""Review signals: differential counts, the mislabel queue, OOD statistics, predictions, report.

Paper 1 (Röhrl et al. 2023) §5: what a person reviewing a classified sample needs beyond
the predictions themselves.
"""

from __future__ import annotations

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
