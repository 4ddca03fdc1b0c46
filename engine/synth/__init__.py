"""Simulators with ground truth.

- QPI (:mod:`~hemalens.engine.synth.qpi`): phase frames (and optional off-axis holograms)
  of leukocyte suspensions with the objects' positions, kinds and classes.
- Stained bone marrow (:mod:`~hemalens.engine.synth.marrow`): RGB crops of single cells of
  15 maturation stages with slide and region ids (paper 2).

It shares no code with the readers or the segmentation, so it can test them.
"""

from __future__ import annotations

from hemalens.engine.synth.cells import KINDS, LEUKOCYTES, SUPPORT_RAD, DrawnObject
from hemalens.engine.synth.marrow import MarrowSimConfig, import_marrow_patches, simulate_marrow
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
    "MarrowSimConfig",
    "QPISimConfig",
    "import_marrow_patches",
    "plan_runs",
    "simulate_marrow",
    "simulate_qpi",
]
