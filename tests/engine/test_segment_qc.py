from __future__ import annotations

import numpy as np
import pytest

from hemalens.engine.project.schema import QC_REASONS
from hemalens.engine.segment import QC_PRIORITY, SegmentSettings, segment_phase_frame
from hemalens.engine.segment.qc import quality_filter

PX = 0.3


def disc(frame, cx, cy, r, value=1.0):
    yy, xx = np.mgrid[: frame.shape[0], : frame.shape[1]]
    frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = value
    return frame


def test_priority_is_a_subset_of_schema_reasons():
    assert set(QC_PRIORITY) <= set(QC_REASONS)
    assert QC_PRIORITY.index("border") < QC_PRIORITY.index("too_small")
    assert QC_PRIORITY.index("too_small") < QC_PRIORITY.index("too_large")
    assert QC_PRIORITY.index("too_large") < QC_PRIORITY.index("not_round")


def test_quality_filter_reasons_and_priorities():
    s = SegmentSettings()
    #            ok    small  large  round? border+small  small+notround  large+notround  nan
    diameter = [8.0, 3.0, 25.0, 8.0, 3.0, 3.0, 25.0, 8.0, 8.0]
    circ = [0.95, 0.95, 0.95, 0.6, 0.95, 0.5, 0.5, 0.95, 0.85]
    border = [False, False, False, False, True, False, False, False, False]
    nan = [False, False, False, False, False, False, False, True, False]
    ok, reason = quality_filter(np.array(diameter), np.array(circ), np.array(border),
                                np.array(nan), s)
    assert reason.dtype == np.dtype("S16")
    assert list(reason) == [b"", b"too_small", b"too_large", b"not_round", b"border",
                            b"too_small", b"too_large", b"nan", b""]
    np.testing.assert_array_equal(ok, reason == b"")
    # the boundaries themselves pass: diameter == min, circularity == min
    ok, reason = quality_filter(np.array([4.0, 20.0]), np.array([0.85, 0.85]),
                                np.zeros(2, bool), np.zeros(2, bool), s)
    assert ok.all()


def test_quality_filter_switches():
    args = (np.array([30.0, 8.0]), np.array([0.9, 0.9]), np.array([False, True]),
            np.zeros(2, bool))
    ok, reason = quality_filter(*args, SegmentSettings(max_diameter_um=None,
                                                       reject_border=False))
    assert ok.all() and list(reason) == [b"", b""]
    ok, reason = quality_filter(*args, SegmentSettings(min_circularity=0.95))
    assert list(reason) == [b"too_large", b"border"]
    ok, reason = quality_filter(*args, SegmentSettings(min_circularity=0.95, max_diameter_um=None,
                                                       reject_border=False))
    assert list(reason) == [b"not_round", b"not_round"]


def test_frame_objects_get_their_reasons_and_are_kept():
    frame = np.zeros((200, 260), np.float32)
    disc(frame, 40, 40, 15)  # 9 um: passes
    disc(frame, 120, 40, 5)  # 3 um: too_small
    disc(frame, 200, 100, 40)  # 24 um: too_large
    disc(frame, 40, 130, 12)
    disc(frame, 62, 130, 12)  # a touching pair: not_round
    disc(frame, 257, 20, 10)  # cut by the right edge: border
    disc(frame, 120, 160, 14)
    frame[158:161, 119:122] = np.nan  # invalid pixels inside: nan
    frame[5, 5] = np.nan  # NaN in the background is harmless
    cells = segment_phase_frame(frame, PX, 528.0)
    by_pos = {(round(float(x)), round(float(y))): r
              for x, y, r in zip(cells.columns["x"], cells.columns["y"],
                                 cells.columns["qc_reason"], strict=True)}
    assert len(cells) == 6
    assert by_pos[(40, 40)] == b""
    assert by_pos[(120, 40)] == b"too_small"
    assert by_pos[(200, 100)] == b"too_large"
    assert by_pos[(51, 130)] == b"not_round"
    assert next(r for (x, _), r in by_pos.items() if x > 250) == b"border"
    assert by_pos[(120, 160)] == b"nan"
    np.testing.assert_array_equal(cells.columns["qc_pass"], cells.columns["qc_reason"] == b"")
    nan_row = int(np.flatnonzero(cells.columns["qc_reason"] == b"nan")[0])
    assert np.isnan(cells.columns["phase_mean"][nan_row])
    assert np.isnan(cells.columns["optical_volume_um3"][nan_row])
    assert cells.columns["diameter_um"][nan_row] == pytest.approx(14 * 2 * PX, rel=0.03)
    ok_row = int(np.flatnonzero(cells.columns["qc_pass"])[0])
    assert cells.columns["phase_mean"][ok_row] == pytest.approx(1.0)
    assert np.isfinite(cells.images).all() and cells.images.min() >= 0


def test_specks_below_min_area_are_not_objects():
    frame = np.zeros((100, 100), np.float32)
    disc(frame, 30, 30, 1.6, value=3.0)  # ~9 px speck
    disc(frame, 70, 70, 12)
    cells = segment_phase_frame(frame, PX, 528.0)
    assert len(cells) == 1
    cells = segment_phase_frame(frame, PX, 528.0, SegmentSettings(min_contour_area_px=0))
    assert len(cells) == 2 and b"too_small" in cells.columns["qc_reason"]
