"""Object detection in stained RGB images: stain foreground, Otsu, distance-transform watershed."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from hemalens.engine.segment.detect import reading_order

# The foreground threshold never goes below the brightest (background) stain level plus
# this margin, so an empty field does not get split by Otsu into two noise classes.
_MIN_CONTRAST = 0.08


def as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    """Validate an RGB frame and return it as C-contiguous ``(H, W, 3)`` uint8.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped); uint8, or float in [0, 1]
        (values above 1 are taken as 0-255).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.

    Raises
    ------
    ValueError
        If the array is not a non-empty colour image or has non-finite values.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {rgb.shape}")
    rgb = rgb[..., :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if not np.issubdtype(rgb.dtype, np.number) or np.iscomplexobj(rgb):
        raise ValueError(f"expected a real RGB frame, got dtype {rgb.dtype}")
    values = rgb.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("RGB frame has non-finite values")
    if np.issubdtype(rgb.dtype, np.floating) and values.max() <= 1.0:
        values = values * 255.0
    return np.ascontiguousarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def stain_score(rgb: np.ndarray) -> np.ndarray:
    """Return a [0, 1] foreground score: ``1 - min(R, G, B) / 255``.

    The minimum channel is high only for white/light-grey background; any stain
    (purple nuclei, blue-to-pink cytoplasm) or darkness lowers it, whatever the hue.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32.
    """
    return 1.0 - rgb.min(axis=2).astype(np.float32) / 255.0


def rgb_objects(
    rgb: np.ndarray, pixel_size_um: float, min_diameter_um: float, min_area_px: float
) -> tuple[list[np.ndarray], np.ndarray, tuple[float, float, float]]:
    """Find cells in a stained RGB frame, splitting touching ones.

    Foreground = the lightly smoothed :func:`stain_score` above the lower of the Otsu
    and the triangle threshold (never below the background level + 0.08), holes
    filled. With dark nuclei Otsu alone separates nuclei from pale cytoplasm; the
    triangle method finds the foot of the dominant background peak instead. Touching
    cells are split by a watershed of the negated distance transform, one marker per
    ``peak_local_max`` peak (``min_distance`` = the radius of the smallest accepted
    cell) that is also an h-maximum of height 1/4 of that radius, so shallow bumps of a
    ragged outline do not start their own cell.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 frame.
    pixel_size_um : float
        Pixel size, um.
    min_diameter_um : float
        Smallest cell diameter of interest, um (sets the marker spacing).
    min_area_px : float
        Regions with a smaller ``cv2.contourArea`` are dropped as specks.

    Returns
    -------
    contours : list of numpy.ndarray
        One external contour per cell, frame px, in reading order.
    foreground : numpy.ndarray
        ``(H, W)`` bool foreground mask.
    background_rgb : tuple of float
        Median colour of the background pixels (white if there are none).
    """
    score = cv2.GaussianBlur(stain_score(rgb), (5, 5), 1.0)
    score8 = np.clip(np.rint(score * 255), 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(score8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    triangle, _ = cv2.threshold(score8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_TRIANGLE)
    floor = np.percentile(score8, 1) + _MIN_CONTRAST * 255
    foreground = ndi.binary_fill_holes(score8 > max(min(otsu, triangle), floor))
    foreground = ndi.binary_opening(foreground, structure=np.ones((3, 3), bool))
    background = ~foreground
    bg = np.median(rgb[background], axis=0) if background.any() else np.full(3, 255.0)
    bg_rgb = (float(bg[0]), float(bg[1]), float(bg[2]))
    if not foreground.any():
        return [], foreground, bg_rgb

    radius_px = max(min_diameter_um / 2 / pixel_size_um, 2.0)
    dist = ndi.distance_transform_edt(foreground)
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(
        dist, min_distance=max(int(radius_px), 1), labels=components, exclude_border=False
    )
    prominent = h_maxima(dist, max(radius_px / 4, 1.0)).astype(bool)
    peaks = peaks[prominent[peaks[:, 0], peaks[:, 1]]]
    # peaks on one h-maximum plateau share a marker
    plateaus, _ = ndi.label(prominent, structure=np.ones((3, 3), bool))
    markers = np.zeros(foreground.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = plateaus[peaks[:, 0], peaks[:, 1]]
    # every component gets at least one marker (its deepest point)
    unmarked = np.setdiff1d(np.arange(1, components.max() + 1), components[markers > 0])
    if unmarked.size:
        deepest = ndi.maximum_position(dist, components, unmarked)
        offset = markers.max()
        for j, (r, c) in enumerate(deepest):
            markers[r, c] = offset + 1 + j
    labels = watershed(-dist, markers, mask=foreground)

    contours: list[np.ndarray] = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        local = (labels[sl] == k).view(np.uint8)
        found, _ = cv2.findContours(
            local, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(sl[1].start, sl[0].start)
        )
        if not found:
            continue
        c = max(found, key=cv2.contourArea)
        if cv2.contourArea(c) >= min_area_px:
            contours.append(c)
    contours.sort(key=reading_order)
    return contours, foreground, bg_rgb
