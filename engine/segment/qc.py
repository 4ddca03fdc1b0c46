"""Quality filter: one primary rejection reason per object; rejected objects are kept."""

from __future__ import annotations

import numpy as np

from hemalens.engine.project.schema import QC_REASONS
from hemalens.engine.segment.settings import SegmentSettings

#: Reasons in decreasing priority: the first that applies is recorded.
QC_PRIORITY: tuple[str, ...] = QC_REASONS


def quality_filter(
    diameter_um: np.ndarray,
    circularity: np.ndarray,
    touches_border: np.ndarray,
    has_nonfinite: np.ndarray,
    settings: SegmentSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Decide which objects pass QC and why the others fail.

    Parameters
    ----------
    diameter_um, circularity : numpy.ndarray
        Per-object equivalent diameter (um) and circularity: the column named by
        ``settings.circularity_measure`` (``circularity``, paper 1's definition, or
        ``circularity_smooth``).
    touches_border, has_nonfinite : numpy.ndarray
        Per-object bool flags.
    settings : SegmentSettings
        ``min_diameter_um``, ``max_diameter_um`` (None: no bound), ``min_circularity``
        (against ``circularity_measure``), ``reject_border``.

    Returns
    -------
    qc_pass : numpy.ndarray
        bool per object.
    qc_reason : numpy.ndarray
        ``S16`` per object: ``b""`` when passed, else the highest-priority reason of
        :data:`QC_PRIORITY` (``nan``, ``border``, ``too_small``, ``too_large``,
        ``not_round``).
    """
    diameter_um = np.asarray(diameter_um, dtype=np.float64)
    failed = {
        "nan": np.asarray(has_nonfinite, dtype=bool),
        "border": np.asarray(touches_border, dtype=bool) & settings.reject_border,
        "too_small": diameter_um < settings.min_diameter_um,
        "too_large": (
            diameter_um > settings.max_diameter_um
            if settings.max_diameter_um is not None
            else np.zeros(diameter_um.shape, bool)
        ),
        # NaN circularity cannot happen for a contour, but would fail rather than pass
        "not_round": ~(np.asarray(circularity, dtype=np.float64) >= settings.min_circularity),
    }
    reason = np.zeros(diameter_um.shape, dtype="S16")
    for name in reversed(QC_PRIORITY):  # higher priority overwrites lower
        reason[failed[name]] = name.encode()
    return reason == b"", reason
