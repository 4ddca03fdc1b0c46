from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from hemalens.engine.project.schema import CELL_COLUMNS
from hemalens.engine.segment import FRAME_COLUMNS, SegmentSettings, segment_phase_frame
from hemalens.engine.segment.features import robust_perimeter_px

PX = 0.3
LAM = 528.0
RNG = np.random.default_rng(42)


def grid(h=120, w=140):
    return np.mgrid[:h, :w].astype(np.float64)


def disc(cx, cy, r, value=1.0, h=120, w=140):
    yy, xx = grid(h, w)
    return np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, value, 0.0).astype(np.float32)


def sphere(cx, cy, r, peak, h=120, w=140):
    yy, xx = grid(h, w)
    rho2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
    return (peak * np.sqrt(np.clip(1 - rho2, 0, None))).astype(np.float32)


def one(frame, settings=None):
    cells = segment_phase_frame(frame, PX, LAM, settings or SegmentSettings())
    assert len(cells) == 1
    return {k: v[0] for k, v in cells.columns.items()}


def test_columns_follow_schema():
    cells = segment_phase_frame(disc(60.3, 50.6, 20), PX, LAM)
    assert set(cells.columns) == set(FRAME_COLUMNS)
    for name, arr in cells.columns.items():
        assert arr.dtype == np.dtype(CELL_COLUMNS[name][0]), name
        assert arr.shape == (1,)


@pytest.mark.parametrize("d_um", [4.0, 5.0, 7.5, 10.0, 15.0, 20.0])
def test_disc_geometry_matches_analytic(d_um):
    r = d_um / 2 / PX
    cx, cy = 70 + RNG.random(), 60 + RNG.random()
    c = one(disc(cx, cy, r, h=140, w=160))
    assert c["area_um2"] == pytest.approx(math.pi * (d_um / 2) ** 2, rel=0.03)
    assert c["diameter_um"] == pytest.approx(d_um, rel=0.015)
    assert c["perimeter_um"] == pytest.approx(math.pi * d_um, rel=0.02)
    assert c["pixel_count"] == pytest.approx(math.pi * r * r, rel=0.03)
    # digitisation moves the centroid of a small disc by up to ~0.1 px
    assert c["x"] == pytest.approx(cx, abs=0.1) and c["y"] == pytest.approx(cy, abs=0.1)
    assert 0.95 <= c["circularity_smooth"] <= 1.03
    # paper 1's definition (cv2.arcLength of the pixel chain) is size-dependent: 0.91-1.06
    assert 0.9 <= c["circularity"] <= 1.07
    # bbox encloses the disc tightly
    assert c["bbox_x"] == pytest.approx(cx - r, abs=1.01)
    assert c["bbox_w"] == pytest.approx(2 * r, abs=2.01)
    assert not c["touches_border"]


@pytest.mark.parametrize(("a", "b", "angle"), [(30, 15, 0), (25, 18, 30), (40, 12, 75)])
def test_ellipse_geometry(a, b, angle):
    yy, xx = grid()
    t = math.radians(angle)
    u = (xx - 70.3) * math.cos(t) + (yy - 60.6) * math.sin(t)
    v = -(xx - 70.3) * math.sin(t) + (yy - 60.6) * math.cos(t)
    c = one(((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.float32))
    h = ((a - b) / (a + b)) ** 2
    ramanujan = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert c["area_um2"] == pytest.approx(math.pi * a * b * PX**2, rel=0.04)
    assert c["perimeter_um"] == pytest.approx(ramanujan * PX, rel=0.03)
    expected_circ = 4 * math.pi * math.pi * a * b / ramanujan**2
    assert c["circularity_smooth"] == pytest.approx(expected_circ, abs=0.04)
    assert c["circularity"] < c["circularity_smooth"]  # the staircase lengthens arcLength


def test_optical_volume_and_phase_stats_of_sphere_profile():
    r, peak = 25.0, 2.0
    c = one(sphere(70.4, 60.2, r, peak))
    # integral of peak*sqrt(1-(rho/R)^2) over the disc = 2/3 pi R^2 peak (rad px^2)
    lam_um = LAM * 1e-3
    expected = 2 / 3 * math.pi * r**2 * peak * PX**2 * lam_um / (2 * math.pi)
    assert c["optical_volume_um3"] == pytest.approx(expected, rel=0.02)
    assert c["phase_max"] == pytest.approx(peak, rel=0.01)
    # mean over the disc is 2/3 peak; std = peak*sqrt(1/2 - 4/9)
    assert c["phase_mean"] == pytest.approx(2 / 3 * peak, rel=0.02)
    assert c["phase_std"] == pytest.approx(peak * math.sqrt(0.5 - 4 / 9), rel=0.05)
    # optical volume is linear in the wavelength
    c2 = {k: v[0] for k, v in segment_phase_frame(sphere(70.4, 60.2, r, peak), PX, 2 * LAM)
          .columns.items()}
    assert c2["optical_volume_um3"] == pytest.approx(2 * c["optical_volume_um3"], rel=1e-5)


def test_centroid_is_geometric_not_phase_weighted():
    yy, xx = grid()
    ramp = disc(70.25, 60.75, 20) * (1 + 0.1 * (xx - 50)).astype(np.float32)
    c = one(ramp)
    assert c["x"] == pytest.approx(70.25, abs=0.05) and c["y"] == pytest.approx(60.75, abs=0.05)


def test_holes_do_not_split_a_cell():
    """A biconcave erythrocyte-like profile whose centre drops below the threshold."""
    yy, xx = grid()
    rho = np.hypot(xx - 70, yy - 60) / 25
    ring = np.where(rho <= 1, 0.8 * np.sin(np.pi * np.clip(rho, 0, 1)) ** 0.5, 0).astype(
        np.float32
    )
    assert ring[60, 70] < SegmentSettings().threshold_rad
    c = one(ring)
    assert c["pixel_count"] == pytest.approx(math.pi * 25**2, rel=0.05)
    assert c["circularity_smooth"] > 0.95 and c["circularity"] > 0.9


@pytest.mark.parametrize("d_um", np.arange(4.0, 20.1, 1.0))
def test_digitised_discs_are_round(d_um):
    r = d_um / 2 / PX
    for _ in range(4):
        c = one(disc(70 + RNG.random(), 60 + RNG.random(), r, h=140, w=160))
        assert c["circularity"] >= 0.9
        assert c["qc_reason"] != b"not_round"


@pytest.mark.parametrize("d_um", [4.0, 6.0, 8.0, 12.0, 15.0])
@pytest.mark.parametrize("sep", [2.0, 1.8, 1.6])
def test_touching_pairs_are_not_round(d_um, sep):
    r = d_um / 2 / PX
    frame = np.maximum(disc(50, 60, r, h=120, w=160), disc(50 + sep * r, 60.4, r, h=120, w=160))
    c = one(frame, SegmentSettings(max_diameter_um=None))
    assert c["circularity"] < 0.85
    assert c["qc_reason"] == b"not_round"


def test_circularity_is_paper_definition_with_cv2_arclength():
    frame = np.zeros((120, 160), np.float32)
    frame[30:70, 40:110] = 1.0  # a 70 x 40 px rectangle, far from round
    cells = segment_phase_frame(frame, PX, LAM)
    contour = cells.contours[0]
    count = cells.columns["pixel_count"][0]
    paper = 4 * math.pi * count / cv2.arcLength(contour, True) ** 2
    assert cells.columns["circularity"][0] == pytest.approx(paper, rel=1e-6)
    smooth = 4 * math.pi * count / robust_perimeter_px([contour])[0] ** 2
    assert cells.columns["circularity_smooth"][0] == pytest.approx(smooth, rel=1e-6)
    # QC reads the column the settings name
    for measure in ("circularity", "circularity_smooth"):
        value = cells.columns[measure][0]
        s = SegmentSettings(min_circularity=float(value) + 0.001, circularity_measure=measure,
                            max_diameter_um=None)
        assert segment_phase_frame(frame, PX, LAM, s).columns["qc_reason"][0] == b"not_round"
        s = SegmentSettings(min_circularity=float(value) - 0.001, circularity_measure=measure,
                            max_diameter_um=None)
        assert segment_phase_frame(frame, PX, LAM, s).columns["qc_pass"][0]
    with pytest.raises(ValueError, match="circularity_measure"):
        SegmentSettings(circularity_measure="roundness")


def test_touches_border_and_bbox():
    c = one(disc(5.0, 60.0, 15))
    assert c["touches_border"] and c["bbox_x"] == 0
    c = one(disc(70.0, 110.0, 15))  # bottom edge: row h-1
    assert c["touches_border"] and c["bbox_y"] + c["bbox_h"] == 120
    c = one(disc(70.0, 60.0, 15))
    assert not c["touches_border"]


def test_robust_perimeter_of_polygons():
    frame = np.zeros((80, 80), np.uint8)
    frame[20:60, 10:70] = 1  # 60 x 40 rectangle: true outline 200 px
    contours, _ = cv2.findContours(frame, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    assert robust_perimeter_px(contours)[0] == pytest.approx(200, rel=0.02)
    assert robust_perimeter_px([]).shape == (0,)
