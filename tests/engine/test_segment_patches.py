from __future__ import annotations

import math

import numpy as np
import pytest

from hemalens.engine.segment import SegmentSettings, normalise_phase, segment_phase_frame
from hemalens.engine.segment.patches import extract_patches

LAM = 528.0


def sphere(cx_um, cy_um, r_um, peak, px, h_um=36.0, w_um=42.0):
    """Sample a sphere-like phase profile given in physical units on a px grid."""
    h, w = round(h_um / px), round(w_um / px)
    yy, xx = np.mgrid[:h, :w] * px
    rho2 = ((xx - cx_um) ** 2 + (yy - cy_um) ** 2) / r_um**2
    return (peak * np.sqrt(np.clip(1 - rho2, 0, None))).astype(np.float32)


def weighted_centroid(img):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()


@pytest.mark.parametrize(("dx", "dy"), [(0.0, 0.0), (0.25, 0.5), (0.73, 0.11), (0.5, 0.9)])
def test_patch_is_centred_on_subpixel_centroid(dx, dy):
    px = 0.3
    true_x, true_y = 20.0 / px + dx, 18.0 / px + dy  # frame px
    cells = segment_phase_frame(sphere(true_x * px, true_y * px, 4.0, 2.0, px), px, LAM)
    assert len(cells) == 1
    raw = cells.raw[0]
    assert raw.shape == (50, 50) and raw.dtype == np.float32
    x, y = cells.columns["x"][0], cells.columns["y"][0]
    assert x == pytest.approx(true_x, abs=0.1) and y == pytest.approx(true_y, abs=0.1)
    # the patch centre (24.5, 24.5) is the mask centroid; the symmetric profile's own
    # centre sits where the (digitised) mask centroid missed it by
    cx, cy = weighted_centroid(raw)
    assert cx == pytest.approx(24.5 + true_x - x, abs=0.02)
    assert cy == pytest.approx(24.5 + true_y - y, abs=0.02)
    # the patch holds the raw phase: its peak is the sphere's
    assert raw.max() == pytest.approx(2.0, rel=0.02)
    assert not cells.columns["patch_padded"][0]


def test_fov_resampling_matches_across_pixel_sizes():
    """The same physical cell at 0.15 and 0.3 um/px gives the same 15 um patch."""
    coarse = segment_phase_frame(sphere(20.1, 17.9, 4.5, 1.5, 0.3), 0.3, LAM)
    fine = segment_phase_frame(sphere(20.1, 17.9, 4.5, 1.5, 0.15), 0.15, LAM)
    assert len(coarse) == len(fine) == 1
    a, b = coarse.raw[0], fine.raw[0]
    assert a.shape == b.shape == (50, 50)
    assert np.abs(a - b).max() < 0.2  # at the sqrt profile's infinitely steep rim
    assert np.abs(a - b).mean() < 0.01
    assert np.abs(coarse.images[0] - fine.images[0]).mean() < 0.005
    # and the features agree in physical units
    for name in ("diameter_um", "area_um2", "optical_volume_um3", "perimeter_um"):
        assert fine.columns[name][0] == pytest.approx(coarse.columns[name][0], rel=0.03), name
    assert fine.columns["pixel_count"][0] == pytest.approx(4 * coarse.columns["pixel_count"][0],
                                                           rel=0.03)


def test_fov_setting_scales_the_patch():
    px = 0.3
    frame = sphere(21.0, 18.0, 4.0, 2.0, px)
    wide = segment_phase_frame(frame, px, LAM, SegmentSettings(patch_fov_um=30.0)).raw[0]
    base = segment_phase_frame(frame, px, LAM).raw[0]

    def support_width(img):
        return (img > 0.1).sum() ** 0.5

    assert support_width(wide) == pytest.approx(support_width(base) / 2, rel=0.08)
    big = segment_phase_frame(frame, px, LAM, SegmentSettings(patch_size_px=64)).raw
    assert big.shape == (1, 64, 64)


def test_border_cell_is_flagged_and_padded_with_zero():
    px = 0.3
    frame = sphere(2.0, 18.0, 4.0, 2.0, px) + 0.05  # cell cut by the left edge, raised bg
    cells = segment_phase_frame(frame, px, LAM, SegmentSettings(threshold_rad=0.15))
    assert len(cells) == 1
    assert cells.columns["touches_border"][0] and cells.columns["patch_padded"][0]
    assert cells.columns["qc_reason"][0] == b"border"
    raw = cells.raw[0]
    x_edge = 24.5 - cells.columns["x"][0]  # patch column of frame column 0
    assert (raw[:, : math.floor(x_edge) - 1] == 0).all()  # outside the frame: 0
    assert (raw[:, math.ceil(x_edge) + 1 :] >= 0.04).all()  # inside: the frame's values
    # not padded when the patch fits, even if close to the edge
    inner = segment_phase_frame(sphere(7.6, 18.0, 4.0, 2.0, px), px, LAM)
    assert not inner.columns["patch_padded"][0] and not inner.columns["touches_border"][0]


def test_extract_patches_directly():
    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    patches, padded = extract_patches(img, np.array([[60.0, 50.0], [0.0, 0.0], [500.0, 50.0]]),
                                      1.0, 10, 10.0, border_value=-1.0)
    assert patches.shape == (3, 10, 10) and list(padded) == [False, True, True]
    # identity sampling: patch pixel (u, v) = frame (55.5 + u, 45.5 + v), a linear ramp
    np.testing.assert_allclose(patches[0], img[45:55, 55:65] + 0.5 * 121, rtol=1e-4)
    assert (patches[2] == -1).all()
    rgb = np.full((40, 40, 3), 200, np.uint8)
    p, pad = extract_patches(rgb, np.array([[1.0, 1.0]]), 1.0, 8, 8.0, border_value=(1, 2, 3))
    assert p.dtype == np.uint8 and p.shape == (1, 8, 8, 3) and pad[0]
    assert tuple(p[0, 0, 0]) == (1, 2, 3) and tuple(p[0, -1, -1]) == (200, 200, 200)


def test_normalise_clip_bounds():
    s = SegmentSettings()
    raw = np.array([[-1.0, 0.0, 0.2], [2.1, 4.0, 9.0], [np.nan, np.inf, -np.inf]], np.float32)
    out = normalise_phase(raw, s)
    assert out.dtype == np.float32
    expected = [[0, 0, 0], [(2.1 - 0.2) / 3.8, 1, 1], [0, 1, 0]]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    custom = normalise_phase(raw, SegmentSettings(clip_min_rad=0.0, clip_max_rad=2.0))
    assert custom[1, 0] == 1.0 and custom[0, 1] == 0.0


def test_normalise_per_patch():
    s = SegmentSettings(normalisation="per_patch")
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.3, 1.5, (3, 8, 8)).astype(np.float32)
    raw[2] = 1.0  # constant patch
    out = normalise_phase(raw, s)
    for i in range(2):
        assert out[i].min() == 0.0 and out[i].max() == pytest.approx(1.0)
        np.testing.assert_allclose(out[i], (raw[i] - raw[i].min()) / np.ptp(raw[i]), atol=1e-6)
    assert (out[2] == 0).all()
    assert normalise_phase(np.zeros((0, 8, 8), np.float32), s).shape == (0, 8, 8)


def test_images_are_normalised_raw():
    frame = sphere(20.0, 18.0, 4.0, 3.0, 0.3)
    for norm in ("clip", "per_patch"):
        s = SegmentSettings(normalisation=norm)
        cells = segment_phase_frame(frame, 0.3, LAM, s)
        np.testing.assert_array_equal(cells.images, normalise_phase(cells.raw, s))
        assert cells.images.min() >= 0 and cells.images.max() <= 1
    clip = segment_phase_frame(frame, 0.3, LAM).images[0]
    assert clip.max() == pytest.approx((3.0 - 0.2) / 3.8, abs=0.02)  # absolute scale kept
