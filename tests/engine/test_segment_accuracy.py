"""Diameter accuracy of the threshold mask on sphere-like phase profiles with noise."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hemalens.engine.segment import SegmentSettings, segment_phase_frame

PX = 0.3
LAM = 528.0


def noisy_spheres(peak, rng, h=160, w=400, noise=0.03):
    """Four spheres of 6-15 um diameter at sub-pixel centres plus Gaussian noise."""
    diameters = rng.uniform(6.0, 15.0, 4)
    yy, xx = np.mgrid[:h, :w]
    frame = rng.normal(0.0, noise, (h, w))
    centres = []
    for i, d in enumerate(diameters):
        cx, cy = 50 + 100 * i + rng.random(), h / 2 + rng.random()
        rho2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (d / 2 / PX) ** 2
        frame += peak * np.sqrt(np.clip(1 - rho2, 0, None))
        centres.append((cx, cy))
    return frame.astype(np.float32), diameters, np.array(centres)


@pytest.mark.parametrize("peak", [0.5, 1.0, 2.0, 4.0])
def test_diameter_error_of_sphere_profiles(peak):
    rng = np.random.default_rng(int(peak * 10))
    errors = []
    for _ in range(5):
        frame, diameters, centres = noisy_spheres(peak, rng)
        cells = segment_phase_frame(frame, PX, LAM)
        assert len(cells) == 4  # no noise specks, no split cells
        order = np.argsort(cells.columns["x"])  # rows come in reading order
        np.testing.assert_allclose(cells.columns["x"][order], centres[:, 0], atol=0.3)
        np.testing.assert_allclose(cells.columns["y"][order], centres[:, 1], atol=0.3)
        errors.extend(cells.columns["diameter_um"][order] / diameters - 1)
        assert cells.columns["qc_pass"].all()
    errors = np.asarray(errors)
    assert abs(np.median(errors)) <= 0.05  # the acceptance
    assert np.abs(errors).max() <= 0.05  # in fact every cell is within 5 %


def test_smoothed_threshold_alone_would_overestimate_steep_cells():
    """Why the mask also requires the raw phase above the threshold."""
    rng = np.random.default_rng(7)
    frame, diameters, _ = noisy_spheres(4.0, rng)
    cells = segment_phase_frame(frame, PX, LAM)
    order = np.argsort(cells.columns["x"])
    assert np.median(cells.columns["diameter_um"][order] / diameters - 1) < 0.02
    # the same blur, thresholding the smoothed image only: the edge moves out
    smooth = cv2.GaussianBlur(frame, (7, 7), 1.0)
    mask = (smooth > SegmentSettings().threshold_rad).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    stats = stats[1:][np.argsort(stats[1:, cv2.CC_STAT_LEFT])]
    d_smooth = 2 * np.sqrt(stats[:, cv2.CC_STAT_AREA] / np.pi) * PX
    assert np.median(d_smooth / diameters - 1) > 0.05
