"""Phase patch normalisation to [0, 1] (Röhrl et al. 2023, A.1: clip, then min-max)."""

from __future__ import annotations

import numpy as np

from hemalens.engine.segment.settings import SegmentSettings


def normalise_phase(raw: np.ndarray, settings: SegmentSettings) -> np.ndarray:
    """Map raw phase patches (rad) to [0, 1]; the one normalisation used everywhere.

    ``"clip"``: ``(clip(x, lo, hi) - lo) / (hi - lo)`` with the clip bounds
    ``settings.clip_min_rad``/``clip_max_rad``, so values stay comparable across cells
    (absolute phase separates lymphocytes). ``"per_patch"``: clip, then min-max of each
    clipped patch (a constant patch gives 0). NaN counts as background (``lo``).

    Parameters
    ----------
    raw : numpy.ndarray
        ``(..., S, S)`` phase patches, rad; a single ``(S, S)`` patch is fine.
    settings : SegmentSettings
        ``normalisation``, ``clip_min_rad``, ``clip_max_rad``.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape, values in [0, 1].
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim < 2:
        raise ValueError(f"expected (..., S, S) patches, got shape {raw.shape}")
    lo, hi = float(settings.clip_min_rad), float(settings.clip_max_rad)
    # NaN/-inf count as background (lo), +inf as saturated (hi)
    out = np.clip(np.nan_to_num(raw, nan=lo, posinf=hi, neginf=lo), lo, hi).astype(np.float32)
    if settings.normalisation == "clip":
        out -= lo
        out /= hi - lo
    elif settings.normalisation == "per_patch":
        pmin = out.min(axis=(-2, -1), keepdims=True)
        pmax = out.max(axis=(-2, -1), keepdims=True)
        span = pmax - pmin
        out = np.divide(out - pmin, span, out=np.zeros_like(out), where=span > 0)
    else:  # guarded by SegmentSettings; kept for objects built around validation
        raise ValueError(f"unknown normalisation {settings.normalisation!r}")
    return out
