"""Segment one frame into per-object table rows and single-cell patches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hemalens.engine.segment.detect import as_float_frame, find_contours, threshold_mask
from hemalens.engine.segment.features import object_features
from hemalens.engine.segment.normalise import normalise_phase
from hemalens.engine.segment.patches import extract_patches
from hemalens.engine.segment.qc import quality_filter
from hemalens.engine.segment.rgb import as_rgb_uint8, rgb_objects
from hemalens.engine.segment.settings import SegmentSettings

_DEFAULT = SegmentSettings()


@dataclass
class FrameCells:
    """The objects found in one frame.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        Per-object cell-table columns (:data:`~hemalens.engine.segment.features.FRAME_COLUMNS`)
        in the schema dtypes; ``object_id`` is the row index within the frame.
    images : numpy.ndarray
        Phase: ``(n, S, S)`` float32 normalised to [0, 1]; RGB: ``(n, S, S, 3)`` uint8.
    raw : numpy.ndarray or None
        Phase: ``(n, S, S)`` float32 background-subtracted phase, rad; RGB: ``None``.
    contours : list of numpy.ndarray
        ``cv2`` contours in frame pixels, one per object (for display and debugging).
    """

    columns: dict[str, np.ndarray]
    images: np.ndarray
    raw: np.ndarray | None
    contours: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["object_id"])


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def segment_phase_frame(
    phase: np.ndarray,
    pixel_size_um: float,
    wavelength_nm: float,
    settings: SegmentSettings = _DEFAULT,
) -> FrameCells:
    """Detect, measure, quality-check and cut out the cells of one phase frame.

    Threshold + Suzuki-Abe external contours + minimum contour area
    (Röhrl et al. 2023, A.1), features of Table 3 and more (see
    :func:`~hemalens.engine.segment.features.object_features`), QC reasons (see
    :func:`~hemalens.engine.segment.qc.quality_filter`), then patches of
    ``settings.patch_fov_um`` resampled to ``settings.patch_size_px`` around each
    centroid. Rejected objects are kept with their reason.

    Parameters
    ----------
    phase : numpy.ndarray
        ``(H, W)`` background-subtracted phase, rad (the caller subtracts the median
        background). NaN pixels are background for detection; objects containing any
        fail QC with reason ``nan``.
    pixel_size_um : float
        Pixel size, um.
    wavelength_nm : float
        Illumination wavelength, nm (for the optical volume).
    settings : SegmentSettings
        Segmentation parameters.

    Returns
    -------
    FrameCells
        Columns, normalised and raw patches, contours; empty arrays of the right
        shapes when nothing is found.

    Raises
    ------
    ValueError
        If the frame is not 2-D or has no finite pixel, or the pixel size or
        wavelength is not positive.
    """
    px = _check_positive("pixel_size_um", pixel_size_um)
    lam = _check_positive("wavelength_nm", wavelength_nm)
    frame, has_nonfinite = as_float_frame(phase)
    mask = threshold_mask(frame, settings, has_nonfinite)
    contours = find_contours(mask, settings.min_contour_area_px)
    cols, nonfinite_obj = object_features(
        contours, frame.shape, px, phase=frame, wavelength_nm=lam, check_finite=has_nonfinite
    )
    cols["qc_pass"], cols["qc_reason"] = quality_filter(
        cols["diameter_um"], cols[settings.circularity_measure], cols["touches_border"],
        nonfinite_obj, settings
    )
    centres = np.stack([cols["x"], cols["y"]], axis=1)
    raw, cols["patch_padded"] = extract_patches(
        frame, centres, px, settings.patch_size_px, settings.patch_fov_um, border_value=0.0
    )
    return FrameCells(cols, normalise_phase(raw, settings), raw, contours)


def segment_rgb_frame(
    rgb: np.ndarray, pixel_size_um: float, settings: SegmentSettings = _DEFAULT
) -> FrameCells:
    """Detect, measure, quality-check and cut out the cells of one stained RGB frame.

    Cells are the stain foreground (Otsu), touching ones split by a distance-transform
    watershed (see :func:`~hemalens.engine.segment.rgb.rgb_objects`). Geometric
    features and QC as for phase; the phase columns and the optical volume are NaN.
    Patches are ``settings.rgb_patch_size_px`` wide at ``settings.rgb_patch_fov_um``,
    outside the frame filled with the median background colour.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 (or float in [0, 1]) stained image.
    pixel_size_um : float
        Pixel size, um.
    settings : SegmentSettings
        Segmentation parameters.

    Returns
    -------
    FrameCells
        Columns, ``(n, S, S, 3)`` uint8 patches, ``raw=None``, contours.

    Raises
    ------
    ValueError
        If the frame is not an RGB image or the pixel size is not positive.
    """
    px = _check_positive("pixel_size_um", pixel_size_um)
    img = as_rgb_uint8(rgb)
    contours, _, bg_rgb = rgb_objects(
        img, px, settings.min_diameter_um, settings.min_contour_area_px
    )
    cols, nonfinite_obj = object_features(contours, img.shape[:2], px)
    cols["qc_pass"], cols["qc_reason"] = quality_filter(
        cols["diameter_um"], cols[settings.circularity_measure], cols["touches_border"],
        nonfinite_obj, settings
    )
    centres = np.stack([cols["x"], cols["y"]], axis=1)
    images, cols["patch_padded"] = extract_patches(
        img,
        centres,
        px,
        settings.rgb_patch_size_px,
        settings.rgb_patch_fov_um,
        border_value=tuple(round(v) for v in bg_rgb),
    )
    return FrameCells(cols, images, None, contours)
