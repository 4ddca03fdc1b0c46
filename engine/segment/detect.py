"""Object detection in phase frames: threshold, Suzuki-Abe contours, minimum area."""

from __future__ import annotations

import cv2
import numpy as np

from hemalens.engine.segment.settings import SegmentSettings


def as_float_frame(phase: np.ndarray) -> tuple[np.ndarray, bool]:
    """Validate a phase frame and return it as float32 plus a "has non-finite" flag.

    Parameters
    ----------
    phase : numpy.ndarray
        ``(H, W)`` real array.

    Returns
    -------
    frame : numpy.ndarray
        C-contiguous float32 frame (the input itself when it already is one).
    has_nonfinite : bool
        True when some pixels are NaN or infinite.

    Raises
    ------
    ValueError
        If the frame is not 2-D, is empty or has no finite pixel.
    """
    phase = np.asarray(phase)
    if phase.ndim != 2 or phase.size == 0:
        raise ValueError(f"expected a non-empty 2-D phase frame, got shape {phase.shape}")
    if not np.issubdtype(phase.dtype, np.number) or np.iscomplexobj(phase):
        raise ValueError(f"expected a real phase frame, got dtype {phase.dtype}")
    frame = np.ascontiguousarray(phase, dtype=np.float32)
    # one float32 sum is much cheaper than np.isfinite over the frame (an overflow to inf
    # only costs the slower per-object check later); fall back when needed
    has_nonfinite = not np.isfinite(frame.sum())
    if has_nonfinite and not np.isfinite(frame).any():
        raise ValueError("phase frame has no finite pixel (all NaN/inf)")
    return frame, has_nonfinite


def threshold_mask(
    phase: np.ndarray, settings: SegmentSettings, has_nonfinite: bool | None = None
) -> np.ndarray:
    """Return the foreground mask ``(G_sigma * phase > t) & (phase > t)``.

    The smoothed term suppresses noise (no specks, smooth outlines); the raw term keeps
    the blur from pushing steep cell edges outwards, so the equivalent diameter of
    sphere-like cells stays unbiased for peaks from 0.5 to 4 rad. Non-finite pixels
    count as background here.

    Parameters
    ----------
    phase : numpy.ndarray
        ``(H, W)`` float32 background-subtracted phase (rad).
    settings : SegmentSettings
        Uses ``threshold_rad`` and ``smooth_sigma_px``.
    has_nonfinite : bool, optional
        Whether ``phase`` has NaN/inf pixels, if already known (saves a pass).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint8 mask with values 0/1.
    """
    t = settings.threshold_rad
    mask = phase > t  # NaN compares False
    if settings.smooth_sigma_px > 0:
        if has_nonfinite is None:
            has_nonfinite = not np.isfinite(phase.sum())
        # NaN would spread over the blur kernel; as 0 it is simply background
        src = np.nan_to_num(phase, posinf=0.0, neginf=0.0) if has_nonfinite else phase
        # explicit odd kernel: cv2 derives an even/zero size from tiny sigmas
        k = 2 * int(np.ceil(3 * settings.smooth_sigma_px)) + 1
        smooth = cv2.GaussianBlur(src, (k, k), settings.smooth_sigma_px)
        mask &= smooth > t
    return mask.view(np.uint8)


def find_contours(mask: np.ndarray, min_area_px: float) -> list[np.ndarray]:
    """Return the external contours of a mask whose area reaches ``min_area_px``.

    Suzuki-Abe border following (``cv2.findContours``) with ``RETR_EXTERNAL`` so holes
    (low-phase centres) never split a cell, and ``CHAIN_APPROX_NONE`` so every boundary
    pixel is kept and arc lengths are real perimeters.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` uint8 mask.
    min_area_px : float
        Minimum ``cv2.contourArea`` (px^2); smaller contours are noise.

    Returns
    -------
    list of numpy.ndarray
        ``(n, 1, 2)`` int32 contours (x, y) in frame pixels, ordered top to bottom
        (by bounding-box top, then left).
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    kept = [c for c in contours if cv2.contourArea(c) >= min_area_px]
    # a stable reading order, independent of OpenCV's internal one
    kept.sort(key=reading_order)
    return kept


def reading_order(contour: np.ndarray) -> tuple[int, int]:
    """Return a sort key ordering contours top to bottom, then left to right.

    Parameters
    ----------
    contour : numpy.ndarray
        A ``cv2`` contour.

    Returns
    -------
    tuple of int
        ``(top, left)`` of its bounding box.
    """
    x, y, _, _ = cv2.boundingRect(contour)
    return y, x


def background_noise(
    phase: np.ndarray, smooth_sigma_px: float, *, clip: float = 3.0, max_points: int = 20_000
) -> float:
    """Estimate the noise of the smoothed, background-subtracted phase that objects sit on.

    The frame is smoothed as for the mask (what survives smoothing is what can form false
    objects), subsampled, and its standard deviation is estimated robustly (1.4826 MAD)
    with iterative ``clip``-sigma rejection so that cells do not inflate it.

    Parameters
    ----------
    phase : numpy.ndarray
        ``(H, W)`` background-subtracted phase (rad); non-finite pixels are ignored.
    smooth_sigma_px : float
        Gaussian sigma of the mask smoothing (0: none).
    clip : float
        Rejection threshold in robust sigmas.
    max_points : int
        Size of the subsample.

    Returns
    -------
    float
        Robust noise sigma in rad (0.0 for a constant frame).
    """
    frame: np.ndarray = np.ascontiguousarray(phase, dtype=np.float32)
    if smooth_sigma_px > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), smooth_sigma_px)
    step = max(1, int(np.ceil(np.sqrt(frame.size / max_points))))
    values = frame[::step, ::step].ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    keep = values
    sigma = 0.0
    for _ in range(5):
        med = float(np.median(keep))
        sigma = 1.4826 * float(np.median(np.abs(keep - med)))
        new = values[np.abs(values - med) <= clip * sigma] if sigma > 0 else keep
        if new.size == keep.size or new.size < 16:
            break
        keep = new
    return sigma


def adaptive_threshold(phase: np.ndarray, settings: SegmentSettings) -> float:
    """Return ``max(threshold_rad, noise_k * background_noise(phase))`` for a frame.

    Parameters
    ----------
    phase : numpy.ndarray
        ``(H, W)`` background-subtracted phase (rad), e.g. the first frame of a block.
    settings : SegmentSettings
        Uses ``threshold_rad``, ``noise_k`` and ``smooth_sigma_px``.

    Returns
    -------
    float
        The threshold to segment this frame (or block of frames) with, rad.
    """
    if settings.noise_k <= 0:
        return settings.threshold_rad
    noise = background_noise(phase, settings.smooth_sigma_px)
    return max(settings.threshold_rad, settings.noise_k * noise)
