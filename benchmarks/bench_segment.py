"""Benchmark: phase-frame segmentation throughput and median-background cost.

Frames come from a small local model (about 10 sphere-like cells of 6-14 um, peaks
0.5-3 rad, 0.03 rad noise, 382x512 px at 0.3 um/px); engine/synth is deliberately not
used. Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_segment [--frames N]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np

from hemalens.engine.segment import SegmentSettings, median_background, segment_phase_frame

H, W = 382, 512
PIXEL_UM = 0.3
WAVELENGTH_NM = 528.0


def make_frames(n: int, cells: int = 10, seed: int = 0) -> np.ndarray:
    """Return ``(n, H, W)`` float32 frames with ~``cells`` non-overlapping spheres each."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(0.0, 0.03, (n, H, W)).astype(np.float32)
    for f in frames:
        placed: list[tuple[float, float, float]] = []
        while len(placed) < cells:
            r = rng.uniform(3.0, 7.0) / PIXEL_UM
            cx, cy = rng.uniform(r + 2, W - r - 2), rng.uniform(r + 2, H - r - 2)
            if any(np.hypot(cx - x, cy - y) < r + q + 3 for x, y, q in placed):
                continue
            placed.append((cx, cy, r))
            x0, x1 = int(cx - r) - 1, int(cx + r) + 2
            y0, y1 = int(cy - r) - 1, int(cy + r) + 2
            yy, xx = np.mgrid[y0:y1, x0:x1]
            rho2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
            f[y0:y1, x0:x1] += rng.uniform(0.5, 3.0) * np.sqrt(np.clip(1 - rho2, 0, None))
    return frames


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames to segment")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads value")
    args = parser.parse_args(argv)
    if args.threads is not None:
        cv2.setNumThreads(args.threads)

    n_model = min(args.frames, 200)  # frames are reused cyclically beyond this
    frames = make_frames(n_model)
    settings = SegmentSettings()
    segment_phase_frame(frames[0], PIXEL_UM, WAVELENGTH_NM, settings)  # warm-up

    best, cells = float("inf"), 0
    for _ in range(args.repeat):
        cells = 0
        t0 = time.perf_counter()
        for i in range(args.frames):
            found = segment_phase_frame(frames[i % n_model], PIXEL_UM, WAVELENGTH_NM, settings)
            cells += len(found)
        best = min(best, time.perf_counter() - t0)

    stack = np.concatenate([frames] * (-(-100 // n_model)))[:100]
    bg_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        median_background(stack)
        bg_times.append(time.perf_counter() - t0)
    bg_ms = 1e3 * min(bg_times)

    result = {
        "frames": args.frames,
        "seconds": round(best, 4),
        "frames_per_s": round(args.frames / best, 1),
        "cells_per_s": round(cells / best, 1),
        "cells_per_frame": round(cells / args.frames, 2),
        "background_ms_per_block": round(bg_ms, 2),
        "background_ms_per_frame_amortised": round(bg_ms / 100, 3),
        "cpu_count": os.cpu_count(),
        "cv2_threads": cv2.getNumThreads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
