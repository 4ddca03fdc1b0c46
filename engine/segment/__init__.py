"""Segmentation of phase and stained RGB frames into measured single-cell patches.

Pipeline per frame: threshold + Suzuki-Abe contours (:mod:`.detect`, :mod:`.rgb`),
features (:mod:`.features`), quality filter (:mod:`.qc`), patches (:mod:`.patches`)
normalised by :func:`normalise_phase`; the median background per block of frames comes
from :mod:`.background`. Follows Röhrl et al. 2023, appendix A.1-A.2.
"""

from __future__ import annotations

from hemalens.engine.segment.background import background_blocks, median_background
from hemalens.engine.segment.detect import adaptive_threshold, background_noise
from hemalens.engine.segment.features import FRAME_COLUMNS, empty_frame_columns
from hemalens.engine.segment.frame import FrameCells, segment_phase_frame, segment_rgb_frame
from hemalens.engine.segment.normalise import normalise_phase
from hemalens.engine.segment.qc import QC_PRIORITY
from hemalens.engine.segment.settings import NORMALISATIONS, SegmentSettings

__all__ = [
    "FRAME_COLUMNS",
    "NORMALISATIONS",
    "QC_PRIORITY",
    "FrameCells",
    "SegmentSettings",
    "adaptive_threshold",
    "background_noise",
    "background_blocks",
    "empty_frame_columns",
    "median_background",
    "normalise_phase",
    "segment_phase_frame",
    "segment_rgb_frame",
]
