from __future__ import annotations

import numpy as np
import pytest

from hemalens.engine.segment import (
    SegmentSettings,
    background_blocks,
    median_background,
    segment_phase_frame,
)


def test_blocks_split_consecutively():
    assert background_blocks(300, 100) == [range(0, 100), range(100, 200), range(200, 300)]
    # a last block of exactly n // 2 frames stands on its own
    assert background_blocks(250, 100) == [range(0, 100), range(100, 200), range(200, 250)]


def test_short_last_block_joins_previous():
    assert background_blocks(249, 100) == [range(0, 100), range(100, 249)]
    assert background_blocks(298, 100) == [range(0, 100), range(100, 200), range(200, 298)]
    assert background_blocks(149, 100) == [range(0, 149)]
    assert background_blocks(150, 100) == [range(0, 100), range(100, 150)]


def test_blocks_small_and_degenerate():
    assert background_blocks(0, 100) == []
    assert background_blocks(7, 100) == [range(0, 7)]  # a lone short block stays
    assert background_blocks(5, 1) == [range(i, i + 1) for i in range(5)]
    for n_frames, n in [(1, 1), (99, 100), (1000, 100), (1049, 100), (1050, 100), (13, 4)]:
        blocks = background_blocks(n_frames, n)
        assert [i for b in blocks for i in b] == list(range(n_frames))
        assert all(len(b) >= min(n // 2, n_frames) for b in blocks)
    with pytest.raises(ValueError, match="block size"):
        background_blocks(10, 0)


@pytest.mark.parametrize("k", [1, 2, 7, 100, 101])
def test_median_matches_numpy(k):
    rng = np.random.default_rng(k)
    frames = rng.normal(0, 1, (k, 37, 45)).astype(np.float32)
    got = median_background(frames)
    assert got.dtype == np.float32 and got.shape == (37, 45)
    np.testing.assert_array_equal(got, np.median(frames, axis=0).astype(np.float32))


def test_median_of_integers_keeps_half_values():
    frames = np.array([[[1, 4]], [[2, 7]]], dtype=np.uint16)
    np.testing.assert_array_equal(median_background(frames), [[1.5, 5.5]])


def test_median_rejects_bad_shape():
    with pytest.raises(ValueError, match="stack"):
        median_background(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="stack"):
        median_background(np.zeros((0, 5, 5)))


def test_median_background_removes_stationary_pattern():
    """Moving cells over a fixed fringe pattern: the median recovers the pattern and
    subtraction leaves exactly the cells."""
    rng = np.random.default_rng(3)
    h, w, k = 96, 128, 25
    yy, xx = np.mgrid[:h, :w]
    pattern = (0.4 * np.sin(xx / 5.0) + 0.3 * np.cos(yy / 7.0) + 0.002 * xx).astype(np.float32)
    frames = np.empty((k, h, w), np.float32)
    centres = []
    for i in range(k):
        cx, cy = 20 + 3.5 * i, 30 + 1.5 * i  # the cell moves by more than its size
        rho2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / 12.0**2
        frames[i] = pattern + 1.5 * np.sqrt(np.clip(1 - rho2, 0, None))
        frames[i] += rng.normal(0, 0.03, (h, w))
        centres.append((cx, cy))
    bg = median_background(frames)
    assert np.abs(bg - pattern).max() < 0.12
    assert np.abs(bg - pattern).std() < 0.02
    # without subtraction the fringes are "cells"; with it, one cell per frame
    assert len(segment_phase_frame(frames[5], 0.3, 528.0)) > 1
    for i in (0, 5, 12, 24):
        cells = segment_phase_frame(frames[i] - bg, 0.3, 528.0, SegmentSettings())
        assert len(cells) == 1
        assert cells.columns["x"][0] == pytest.approx(centres[i][0], abs=0.2)
        assert cells.columns["y"][0] == pytest.approx(centres[i][1], abs=0.2)
