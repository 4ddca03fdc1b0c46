"""QPI simulator with ground truth for leukocyte suspensions.

Phase frames (and optional off-axis holograms) with the objects' positions, kinds and
classes.

It shares no code with the readers or the segmentation, so it can test them.
"""

from __future__ import annotations

from hemalens.engine.synth.cells import KINDS, LEUKOCYTES, SUPPORT_RAD, DrawnObject
from hemalens.engine.synth.qpi import (
    MANIFEST_COLUMNS,
    TRUTH_COLUMNS,
    QPISimConfig,
    plan_runs,
    simulate_qpi,
)

__all__ = [
    "KINDS",
    "LEUKOCYTES",
    "MANIFEST_COLUMNS",
    "SUPPORT_RAD",
    "TRUTH_COLUMNS",
    "DrawnObject",
    "QPISimConfig",
    "plan_runs",
    "simulate_qpi",
]
