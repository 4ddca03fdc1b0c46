"""Throughput of off-axis hologram retrieval: qpretrieve alone vs the full reader path.

Builds ``--frames`` holograms of 382x512 px with ~10 cell-like phase objects each and one
empty-field hologram (a simple local model, independent of engine.synth), writes them as
a HemaLens uint16 TIFF stack, then times

(a) ``qpretrieve.OffAxisHologram(frame).run_pipeline(...)`` + ``.phase`` per frame, with
    the reader's filter settings; and
(b) ``open_source(spec).read(i)`` for every frame (TIFF decode + retrieval + background
    division + unwrapping + tilt removal).

Prints one JSON object. Run: ``.venv/bin/python -m benchmarks.bench_hologram [--frames N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

from hemalens.engine.io import HologramSettings, make_spec, open_source
from hemalens.engine.io.hologram import HologramSource

H, W = 382, 512


def _cells(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    phase = np.zeros((H, W))
    for _ in range(n):
        cy, cx = rng.uniform(20, H - 20), rng.uniform(20, W - 20)
        radius, peak = rng.uniform(10, 18), rng.uniform(0.8, 3.5)
        ecc = rng.uniform(0.9, 1.1)
        r2 = ((yy - cy) / ecc) ** 2 + ((xx - cx) * ecc) ** 2
        phase += peak * np.sqrt(np.clip(1 - r2 / radius**2, 0, None))
    return phase


def _hologram(phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    carrier = 2 * np.pi / 4.0 * (xx - yy) / np.sqrt(2)  # 4 px period, 45 degrees
    intensity = 1.0 + 0.5**2 + 2 * 0.5 * np.cos(carrier + phase)
    return np.round(intensity * 9000 + rng.normal(0, 50, phase.shape)).astype(np.uint16)


def build(folder: Path, frames: int, seed: int = 0) -> tuple[Path, Path]:
    """Write a hologram stack and its empty-field hologram; return both paths."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    stationary = 0.25 * np.sin(2 * np.pi * yy / 120) + 0.004 * xx
    stack = np.stack([_hologram(_cells(rng, 10) + stationary, rng) for _ in range(frames)])
    meta = {"pixel_size_um": 0.3, "wavelength_nm": 528.0, "modality": "hologram", "unit": "counts"}
    holo, bg = folder / "bench_holo.tif", folder / "bench_holo_bg.tif"
    tifffile.imwrite(holo, stack, metadata=meta, photometric="minisblack")
    tifffile.imwrite(bg, _hologram(stationary, rng), metadata=meta)
    return holo, bg


def time_qpretrieve(holo: Path, settings: HologramSettings) -> float:
    """Seconds for qpretrieve alone over all frames (frames preloaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import qpretrieve
    stack = tifffile.imread(holo)
    t0 = time.perf_counter()
    for frame in stack:
        oah = qpretrieve.OffAxisHologram(frame, padding=settings.padding)
        oah.run_pipeline(filter_name=settings.filter_name, filter_size=settings.filter_size)
        _ = oah.phase
    return time.perf_counter() - t0


def time_reader(holo: Path, bg: Path, settings: HologramSettings) -> float:
    """Seconds for open_source + read of every frame (the full reader path)."""
    spec = make_spec(holo, background=bg)
    t0 = time.perf_counter()
    # open_source uses the default settings; other paddings go to the source class directly
    src = (
        open_source(spec)
        if settings == HologramSettings()
        else HologramSource(spec, None, settings)
    )
    with src:
        for i in range(src.n_frames):
            src.read(i)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--padding", type=int, default=HologramSettings.padding)
    args = parser.parse_args(argv)
    settings = HologramSettings(padding=args.padding)
    with tempfile.TemporaryDirectory() as tmp:
        holo, bg = build(Path(tmp), args.frames)
        t_qp = time_qpretrieve(holo, settings)
        t_full = time_reader(holo, bg, settings)
    result = {
        "frames": args.frames,
        "shape": [H, W],
        "cpu_count": os.cpu_count(),
        "settings": {
            "filter_name": settings.filter_name,
            "filter_size": settings.filter_size,
            "padding": settings.padding,
        },
        "qpretrieve": {"seconds": round(t_qp, 3), "frames_per_s": round(args.frames / t_qp, 2)},
        "full_read": {
            "seconds": round(t_full, 3),
            "frames_per_s": round(args.frames / t_full, 2),
        },
        "ratio_full_over_qpretrieve": round(t_full / t_qp, 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
