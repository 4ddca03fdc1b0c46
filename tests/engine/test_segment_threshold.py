"""The noise-adaptive threshold: the floor on clean data, above the ripple on real-like data."""

from __future__ import annotations

import numpy as np

from hemalens.engine.segment import (
    SegmentSettings,
    adaptive_threshold,
    background_noise,
    segment_phase_frame,
)


def _cell(shape, centre, radius_px, peak):
    yy, xx = np.indices(shape)
    r2 = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / radius_px**2
    return peak * np.sqrt(np.clip(1 - r2, 0, None))


def test_noise_estimate_ignores_cells_and_measures_the_background():
    rng = np.random.default_rng(0)
    frame = rng.normal(0, 0.05, (256, 256)).astype(np.float32)
    clean = background_noise(frame, smooth_sigma_px=0)
    frame += _cell(frame.shape, (128, 128), 60, 3.0)  # a cell covering ~17 % of the frame
    assert abs(clean - 0.05) < 0.005
    assert abs(background_noise(frame, smooth_sigma_px=0) - clean) < 0.01


def test_clean_frames_keep_the_floor_and_rippled_frames_rise_above_it():
    rng = np.random.default_rng(1)
    settings = SegmentSettings()
    clean = rng.normal(0, 0.03, (200, 200)).astype(np.float32)
    assert adaptive_threshold(clean, settings) == settings.threshold_rad
    yy, xx = np.indices((200, 200))
    ripple = 0.15 * np.sin(xx / 6.0) * np.cos(yy / 9.0)  # low-frequency, survives smoothing
    rippled = (clean + ripple + _cell(clean.shape, (100, 100), 15, 3.0)).astype(np.float32)  # 9 um
    t = adaptive_threshold(rippled, settings)
    assert t > 0.2
    assert adaptive_threshold(rippled, SegmentSettings(noise_k=0)) == settings.threshold_rad
    # With the floor the ripple merges into the cell; with the adaptive threshold it does not.
    merged = segment_phase_frame(rippled, 0.3, 528, settings)
    adapted = segment_phase_frame(rippled, 0.3, 528, SegmentSettings(threshold_rad=t))
    assert int(adapted.columns["qc_pass"].sum()) == 1
    assert int(merged.columns["qc_pass"].sum()) == 0
