from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from hemalens.engine.segment import SegmentSettings, segment_rgb_frame

PX = 0.25  # um/px
BACKGROUND = (238, 232, 236)
CYTOPLASM = (200, 178, 226)  # pale lilac
NUCLEUS = (96, 52, 140)  # purple


def stained(cells, h=200, w=320, seed=0):
    """Draw cells (cx, cy, r, nucleus offset) on a light background with noise."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float64)
    img[:] = BACKGROUND
    for cx, cy, r, off in cells:
        cv2.circle(img, (round(cx * 16), round(cy * 16)), round(r * 16), CYTOPLASM, -1,
                   lineType=cv2.LINE_AA, shift=4)
        cv2.ellipse(img, ((cx + off, cy - off / 2), (1.1 * r, 0.8 * r), 30), NUCLEUS, -1)
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_isolated_and_touching_cells():
    r = 20.0  # 10 um
    img = stained([(50, 60, r, 4), (150, 80, r, -3), (150 + 2 * r, 80, r, 3),
                   (250, 140, r, 2), (250 + 1.7 * r, 140 + 0.5 * r, r, -2)])
    cells = segment_rgb_frame(img, PX)
    assert len(cells) == 5  # two touching pairs split into two cells each
    xs = np.sort(cells.columns["x"])
    np.testing.assert_allclose(xs, np.sort([50, 150, 190, 250, 284]), atol=3)
    lone = int(np.argmin(np.hypot(cells.columns["x"] - 50, cells.columns["y"] - 60)))
    assert cells.columns["diameter_um"][lone] == pytest.approx(2 * r * PX, rel=0.05)
    assert cells.columns["circularity"][lone] > 0.9
    assert cells.columns["qc_pass"][lone]
    # the split halves have about the area of one cell each
    pair = np.abs(cells.columns["y"] - 80) < 5
    assert pair.sum() == 2
    np.testing.assert_allclose(cells.columns["area_um2"][pair], math.pi * (r * PX) ** 2,
                               rtol=0.12)
    # phase-only columns are NaN
    for name in ("phase_mean", "phase_max", "phase_std", "optical_volume_um3"):
        assert np.isnan(cells.columns[name]).all()
    assert cells.raw is None and len(cells.contours) == 5


def test_rgb_patches():
    s = SegmentSettings()
    img = stained([(60, 70, 20, 3), (300, 100, 20, 0)])  # the second is cut by the edge
    cells = segment_rgb_frame(img, PX, s)
    assert cells.images.shape == (2, 96, 96, 3) and cells.images.dtype == np.uint8
    order = np.argsort(cells.columns["x"])
    inner, edge = order
    assert not cells.columns["patch_padded"][inner]
    assert cells.columns["patch_padded"][edge] and cells.columns["touches_border"][edge]
    assert cells.columns["qc_reason"][edge] == b"border"
    # outside the frame: the median background colour
    far_right = cells.images[edge][:, -3:].reshape(-1, 3).astype(int)
    assert np.abs(far_right - BACKGROUND).max() <= 2
    # 96 px over 24 um: 0.25 um/px, the cell (10 um) spans ~40 px around the centre
    patch = cells.images[inner].astype(int)
    assert np.abs(patch[48, 48] - np.array(BACKGROUND)).sum() > 60  # stained centre
    assert np.abs(patch[48, 48 + 25] - np.array(BACKGROUND)).max() < 15  # beyond the rim


def test_blank_and_float_inputs():
    blank = stained([])
    cells = segment_rgb_frame(blank, PX)
    assert len(cells) == 0 and cells.images.shape == (0, 96, 96, 3)
    img = stained([(80, 90, 18, 2)])
    as_float = segment_rgb_frame(img.astype(np.float32) / 255, PX)
    as_uint8 = segment_rgb_frame(img, PX)
    assert len(as_float) == len(as_uint8) == 1
    assert as_float.columns["pixel_count"][0] == as_uint8.columns["pixel_count"][0]
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    assert len(segment_rgb_frame(rgba, PX)) == 1


def test_rgb_bad_inputs():
    with pytest.raises(ValueError, match="RGB"):
        segment_rgb_frame(np.zeros((10, 10)), PX)
    with pytest.raises(ValueError, match="pixel_size_um"):
        segment_rgb_frame(np.zeros((10, 10, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        segment_rgb_frame(np.full((10, 10, 3), np.nan), PX)


@pytest.mark.parametrize("seed", range(3))
def test_elongated_and_ragged_cells_are_not_oversplit(seed):
    rng = np.random.default_rng(seed)
    img = np.empty((200, 320, 3), np.float64)
    img[:] = BACKGROUND
    # an elongated cell (aspect 1.8) and a ragged one: a disc with random bumps
    cv2.ellipse(img, ((90.0, 100.0), (80.0, 44.0), 20.0), CYTOPLASM, -1)
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    radius = 22 + rng.uniform(-2.5, 2.5, angles.size)
    poly = np.stack([230 + radius * np.cos(angles), 100 + radius * np.sin(angles)], axis=1)
    cv2.fillPoly(img, [np.rint(poly).astype(np.int32)], CYTOPLASM)
    for cx in (80, 100, 222, 238):  # lobed nuclei
        cv2.circle(img, (cx, 100), 8, NUCLEUS, -1)
    img = np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)
    cells = segment_rgb_frame(img, PX)
    assert len(cells) == 2
    np.testing.assert_allclose(np.sort(cells.columns["x"]), [90, 230], atol=2)
