"""Median background of blocks of frames (Röhrl et al. 2023, A.1: median of 100 frames)."""

from __future__ import annotations

import numpy as np

# Rows per chunk: the transposed copy of a chunk (k frames x rows x W) stays in cache.
_ROWS_PER_CHUNK = 8


def background_blocks(n_frames: int, n: int) -> list[range]:
    """Split frame indices into consecutive background blocks of ``n`` frames.

    A last block shorter than ``n // 2`` joins the previous one, so no background is
    estimated from only a handful of frames.

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 0).
    n : int
        Frames per block (>= 1).

    Returns
    -------
    list of range
        Consecutive, non-overlapping ranges covering ``range(n_frames)``; empty when
        ``n_frames == 0``.
    """
    if n < 1:
        raise ValueError(f"background block size must be >= 1, got {n}")
    if n_frames < 0:
        raise ValueError(f"number of frames must be >= 0, got {n_frames}")
    if n_frames == 0:
        return []
    starts = list(range(0, n_frames, n))
    if len(starts) > 1 and n_frames - starts[-1] < n // 2:
        starts.pop()
    ends = [*starts[1:], n_frames]
    return [range(s, e) for s, e in zip(starts, ends, strict=True)]


def median_background(frames: np.ndarray) -> np.ndarray:
    """Return the per-pixel median of a stack of frames.

    Equal to ``np.median(frames, axis=0)`` but ~6x faster: the median along the
    first (strided) axis is taken with ``np.partition`` on contiguous transposed
    chunks of rows.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(k, H, W)`` stack, ``k >= 1``; any real dtype. NaN handling is undefined.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 median.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected a (k, H, W) stack with k >= 1, got shape {frames.shape}")
    k, h, w = frames.shape
    if not np.issubdtype(frames.dtype, np.floating):
        frames = frames.astype(np.float32)  # integer medians of even k need the half
    out = np.empty((h, w), np.float32)
    mid = k // 2
    for r in range(0, h, _ROWS_PER_CHUNK):
        chunk = frames[:, r : r + _ROWS_PER_CHUNK]
        block = np.ascontiguousarray(chunk.reshape(k, -1).T)
        block.partition(mid, axis=1)
        med = block[:, mid]
        if k % 2 == 0:
            # after partitioning, the lower middle value is the max of the left part
            med = 0.5 * (med + block[:, :mid].max(axis=1))
        out[r : r + _ROWS_PER_CHUNK] = med.reshape(-1, w)
    return out
