"""Single-cell patches: centred on the sub-pixel centroid, resampled to a fixed field of view."""

from __future__ import annotations

import math

import cv2
import numpy as np


def extract_patches(
    image: np.ndarray,
    centres_xy: np.ndarray,
    pixel_size_um: float,
    size_px: int,
    fov_um: float,
    border_value: float | tuple[float, ...] = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut square patches of a fixed physical field of view around sub-pixel centres.

    Patch pixel ``(u, v)`` samples the frame at
    ``(cx + (u - c) * step, cy + (v - c) * step)`` with ``c = (size_px - 1) / 2`` and
    ``step = fov_um / (size_px * pixel_size_um)`` frame pixels per patch pixel, i.e. the
    patch is magnified by ``pixel_size_um * size_px / fov_um``. The centre thus lies
    between the middle pixels (even sizes) and the centroid is at the patch centre.
    One bilinear ``cv2.warpAffine`` per patch on the crop it needs; samples outside the
    frame take ``border_value``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` frame (float32 or uint8).
    centres_xy : numpy.ndarray
        ``(n, 2)`` centres (x = column, y = row) in frame pixels.
    pixel_size_um : float
        Frame pixel size, um.
    size_px : int
        Patch side, px.
    fov_um : float
        Physical side of the patch, um.
    border_value : float or tuple of float
        Fill value outside the frame (a colour tuple for RGB).

    Returns
    -------
    patches : numpy.ndarray
        ``(n, size_px, size_px[, C])`` array of the image's dtype.
    padded : numpy.ndarray
        bool per patch: some samples fell outside the frame (they hold ``border_value``).
    """
    centres_xy = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    n = len(centres_xy)
    h, w = image.shape[:2]
    patches = np.empty((n, size_px, size_px, *image.shape[2:]), dtype=image.dtype)
    padded = np.zeros(n, dtype=bool)
    step = fov_um / (size_px * pixel_size_um)
    half = (size_px - 1) / 2 * step  # centre to outermost sample, frame px
    if image.ndim == 3:
        border = tuple(float(b) for b in np.broadcast_to(border_value, image.shape[2:]))
    else:
        border = (float(np.asarray(border_value).ravel()[0]),)
    for i, (cx, cy) in enumerate(centres_xy.tolist()):
        x_lo, x_hi, y_lo, y_hi = cx - half, cx + half, cy - half, cy + half
        padded[i] = x_lo < 0 or y_lo < 0 or x_hi > w - 1 or y_hi > h - 1
        # crop with one pixel to spare for the bilinear neighbours
        x0, y0 = max(math.floor(x_lo) - 1, 0), max(math.floor(y_lo) - 1, 0)
        x1, y1 = min(math.ceil(x_hi) + 2, w), min(math.ceil(y_hi) + 2, h)
        if x1 <= x0 or y1 <= y0:  # centre far outside the frame: nothing to sample
            patches[i] = border if image.ndim == 3 else border[0]
            continue
        inverse = np.array([[step, 0.0, x_lo - x0], [0.0, step, y_lo - y0]])
        cv2.warpAffine(
            image[y0:y1, x0:x1],
            inverse,
            (size_px, size_px),
            dst=patches[i],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border,
        )
    return patches, padded
