from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hemalens.engine.project.schema import CELL_COLUMNS
from hemalens.engine.segment import (
    FRAME_COLUMNS,
    FrameCells,
    SegmentSettings,
    segment_phase_frame,
    segment_rgb_frame,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PX, LAM = 0.3, 528.0


def sphere_frame(centres, r=15.0, peak=1.5, h=120, w=160, dtype=np.float32):
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((h, w))
    for cx, cy in centres:
        out += peak * np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2, 0, None))
    return out.astype(dtype)


def assert_empty(cells: FrameCells, s: SegmentSettings, rgb=False):
    assert len(cells) == 0 and cells.contours == []
    assert set(cells.columns) == set(FRAME_COLUMNS)
    for name, arr in cells.columns.items():
        assert arr.shape == (0,) and arr.dtype == np.dtype(CELL_COLUMNS[name][0])
    if rgb:
        assert cells.images.shape == (0, s.rgb_patch_size_px, s.rgb_patch_size_px, 3)
        assert cells.images.dtype == np.uint8 and cells.raw is None
    else:
        assert cells.images.shape == cells.raw.shape == (0, s.patch_size_px, s.patch_size_px)
        assert cells.images.dtype == cells.raw.dtype == np.float32


def test_empty_frames_give_empty_shaped_output():
    s = SegmentSettings()
    rng = np.random.default_rng(0)
    assert_empty(segment_phase_frame(np.zeros((64, 80)), PX, LAM), s)
    noise = rng.normal(0, 0.03, (382, 512)).astype(np.float32)
    assert_empty(segment_phase_frame(noise, PX, LAM), s)  # no specks from 0.03 rad noise
    s2 = SegmentSettings(patch_size_px=32)
    assert_empty(segment_phase_frame(np.zeros((64, 80)), PX, LAM, s2), s2)
    assert_empty(segment_rgb_frame(np.full((64, 80, 3), 240, np.uint8), PX), s, rgb=True)


def test_all_nan_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="no finite pixel"):
        segment_phase_frame(np.full((20, 30), np.nan), PX, LAM)
    with pytest.raises(ValueError, match="no finite pixel"):
        segment_phase_frame(np.full((20, 30), np.inf, np.float32), PX, LAM)
    with pytest.raises(ValueError, match="2-D"):
        segment_phase_frame(np.zeros((2, 20, 30)), PX, LAM)
    with pytest.raises(ValueError, match="2-D"):
        segment_phase_frame(np.zeros((0, 30)), PX, LAM)
    with pytest.raises(ValueError, match="real"):
        segment_phase_frame(np.zeros((20, 30), complex), PX, LAM)
    for bad in (0.0, -0.3, float("nan")):
        with pytest.raises(ValueError, match="pixel_size_um"):
            segment_phase_frame(np.zeros((20, 30)), bad, LAM)
        with pytest.raises(ValueError, match="wavelength_nm"):
            segment_phase_frame(np.zeros((20, 30)), PX, bad)


def test_dtypes_and_purity():
    f32 = sphere_frame([(50.3, 60.2), (110.0, 55.5)])
    ref = segment_phase_frame(f32, PX, LAM)
    before = f32.copy()
    for other in (f32.astype(np.float64), np.asfortranarray(f32), f32[::1, ::1]):
        got = segment_phase_frame(other, PX, LAM)
        for name in FRAME_COLUMNS:
            if name == "qc_reason":
                np.testing.assert_array_equal(got.columns[name], ref.columns[name])
            else:
                np.testing.assert_allclose(got.columns[name].astype(float),
                                           ref.columns[name].astype(float), rtol=1e-6)
        np.testing.assert_allclose(got.raw, ref.raw, atol=1e-6)
    np.testing.assert_array_equal(f32, before)  # the input is not modified
    ints = (f32 * 1000).astype(np.int32)  # e.g. milliradians
    assert len(segment_phase_frame(ints, PX, LAM, SegmentSettings(threshold_rad=100))) == 2


def test_rows_are_in_reading_order_with_object_ids():
    frame = sphere_frame([(130, 90), (40, 30), (100, 30.4), (30, 90)], r=10)
    cells = segment_phase_frame(frame, PX, LAM)
    assert list(cells.columns["object_id"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(cells.columns["x"], [40, 100, 30, 130], atol=0.1)
    assert len(cells.contours) == 4
    for c, x in zip(cells.contours, cells.columns["x"], strict=True):
        assert abs(c[:, 0, 0].mean() - x) < 1.0


def test_nan_pixels_in_background_are_ignored():
    frame = sphere_frame([(60, 60)])
    frame[0:10, 0:10] = np.nan
    frame[100, 150] = np.inf
    cells = segment_phase_frame(frame, PX, LAM)
    assert len(cells) == 1 and cells.columns["qc_pass"][0]
    np.testing.assert_allclose(cells.raw, segment_phase_frame(sphere_frame([(60, 60)]), PX,
                                                              LAM).raw)


def test_settings_roundtrip_and_validation():
    s = SegmentSettings(threshold_rad=0.2, max_diameter_um=None, normalisation="per_patch")
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert SegmentSettings.from_dict(d) == s
    # numpy scalars / bytes as read back from HDF5 attributes, unknown and missing keys
    d2 = {"threshold_rad": np.float64(0.2), "patch_size_px": np.int64(64),
          "reject_border": np.bool_(False), "normalisation": b"clip", "future_key": 1}
    s2 = SegmentSettings.from_dict(d2)
    assert s2.patch_size_px == 64 and type(s2.patch_size_px) is int
    assert s2.reject_border is False and s2.normalisation == "clip"
    assert s2.background_n == 100
    for bad in ({"normalisation": "zscore"}, {"patch_size_px": 0}, {"clip_max_rad": 0.1},
                {"threshold_rad": -1.0}, {"max_diameter_um": 3.0}, {"patch_fov_um": np.nan}):
        with pytest.raises(ValueError, match="SegmentSettings"):
            SegmentSettings(**bad)


@pytest.mark.skipif(not SHARED.exists(), reason="shared test data not available")
def test_real_hologram_yields_one_round_cell():
    qpretrieve = pytest.importorskip("qpretrieve")
    from skimage.restoration import unwrap_phase

    data = np.load(SHARED / "data" / "real" / "hologram_cell.npz")
    holo = qpretrieve.OffAxisHologram(data["data"])
    holo.run_pipeline(filter_name="smooth disk", filter_size=1 / 2)
    bg = qpretrieve.OffAxisHologram(data["bg_data"])
    bg.process_like(holo)
    phase = unwrap_phase(np.squeeze(holo.phase - bg.phase))
    # pixel size not recorded; ~0.1 um is typical of that setup. The residual background
    # tilt is +-0.5 rad, so the threshold has to sit above it.
    cells = segment_phase_frame(phase, 0.107, 633.0, SegmentSettings(threshold_rad=1.0))
    assert len(cells) == 1
    c = {k: v[0] for k, v in cells.columns.items()}
    assert c["phase_max"] == pytest.approx(phase.max(), rel=1e-5) and c["phase_max"] > 4.5
    # Round by the measure QC reads; paper 1's cv2.arcLength circularity (0.88 here) is
    # lowered by the staircase of a 12k-pixel outline, which is why QC reads the smooth one.
    assert c["circularity_smooth"] > 0.9 and not c["touches_border"] and c["qc_pass"]
    assert 0.8 < c["circularity"] < c["circularity_smooth"]
    assert 10 < c["diameter_um"] < 16  # an HL60 cell
    assert cells.images.shape == (1, 50, 50) and 0 <= cells.images.min() <= cells.images.max() <= 1
