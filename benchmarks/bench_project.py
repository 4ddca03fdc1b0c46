"""Benchmark the project file: write, size, open, random patch reads, relabel.

Usage::

    .venv/bin/python -m benchmarks.bench_project [--cells 100000] [--dir DIR]
        [--image-dtype float32|float16] [--no-raw]
        [--patch-filter gzip1|gzip4|lzf|none|bitshuffle-lz4|blosc-lz4]

Prints one JSON object. Patches are 50x50 phase cells (smooth blobs with a nucleus-like
bump, plus noise) so that compression behaves as on real data. Targets: open (cell table
ready) <= 1 s and a single random patch read <= 1 ms at 100k cells.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hemalens.engine.project import store
from hemalens.engine.project.labels import relabel
from hemalens.engine.project.schema import QC_REASONS
from hemalens.engine.project.store import Project, ProjectWriter

S = 50
CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]
FILTERS = {
    "gzip1": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip4": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
    "none": {},
    # hdf5plugin filters (readable by h5py once `import hdf5plugin` has run)
    "bitshuffle-lz4": "bitshuffle-lz4",
    "blosc-lz4": "blosc-lz4",
}


def _filter(name: str) -> dict:
    import hdf5plugin

    if name == "bitshuffle-lz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if name == "blosc-lz4":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    return FILTERS[name]


def fake_batch(rng: np.random.Generator, n: int, frame: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Cells of one frame: columns, normalised patches in [0, 1], raw phase in rad."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) - (S - 1) / 2
    r = rng.uniform(6, 14, (n, 1, 1)).astype(np.float32)
    cx, cy = rng.normal(0, 1.5, (2, n, 1, 1)).astype(np.float32)
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
    body = np.clip(1 - d2, 0, None) ** 0.5  # a sphere's optical path
    nuc = np.exp(-(((xx - cx - r / 3) ** 2 + (yy - cy) ** 2) / (0.3 * r**2)))
    amp = rng.uniform(1.5, 4.0, (n, 1, 1)).astype(np.float32)
    raw = amp * (body + 0.5 * nuc) + rng.normal(0, 0.04, (n, S, S)).astype(np.float32)
    images = np.clip((raw + 0.2) / 6.5, 0, 1).astype(np.float32)
    qc = rng.random(n) > 0.1
    reasons = np.where(qc, "", rng.choice(QC_REASONS, n))
    cells = {
        "input_id": np.zeros(n, np.int32),
        "frame": np.full(n, frame, np.int32),
        "object_id": np.arange(n, dtype=np.int32),
        "x": rng.uniform(0, 1024, n),
        "y": rng.uniform(0, 1024, n),
        "diameter_um": 2 * r.ravel() * 0.2,
        "circularity": rng.uniform(0.7, 1.0, n),
        "area_um2": np.pi * (r.ravel() * 0.2) ** 2,
        "qc_pass": qc,
        "qc_reason": reasons,
        "given_label": rng.integers(-1, len(CLASSES), n),
    }
    return cells, images, raw


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--image-dtype", default="float16", choices=("float32", "float16"))
    ap.add_argument("--patch-filter", default=None, choices=sorted(FILTERS))
    ap.add_argument("--no-raw", action="store_true", help="do not store raw phase patches")
    ap.add_argument("--per-frame", type=int, default=40, help="cells per append call")
    args = ap.parse_args(argv)
    if args.patch_filter:
        store._PATCH_FILTER = _filter(args.patch_filter)  # benchmark-only knob
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.h5"
        gen_s = write_s = 0.0
        with ProjectWriter(
            path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES,
            image_dtype=args.image_dtype,
        ) as w:
            w.add_input({"file": "bench.tif", "modality": "phase", "pixel_size_um": 0.2})
            done, frame = 0, 0
            while done < args.cells:
                n = min(args.per_frame, args.cells - done)
                t0 = time.perf_counter()
                cells, images, raw = fake_batch(rng, n, frame)
                t1 = time.perf_counter()
                w.append(cells, images, None if args.no_raw else raw)
                write_s += time.perf_counter() - t1
                gen_s += t1 - t0
                done, frame = done + n, frame + 1
            t1 = time.perf_counter()
        write_s += time.perf_counter() - t1  # close: flush, inputs, fsync, rename
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

        opens = []
        for _ in range(5):
            t0 = time.perf_counter()
            p = Project.open(path)
            _ = p.cells["given_label"]
            opens.append(time.perf_counter() - t0)
            p.close()

        with Project.open(path) as p:
            ids = rng.integers(0, p.n_cells, 1000)
            lat = []
            for i in ids:
                t0 = time.perf_counter()
                p.image(int(i))
                lat.append(time.perf_counter() - t0)
            raw_lat = []
            for i in ids[:200]:
                t0 = time.perf_counter()
                p.raw(int(i))
                raw_lat.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p.images(np.sort(rng.choice(p.n_cells, 256, replace=False)))
            batch256 = time.perf_counter() - t0
        lat_us = np.array(lat) * 1e6

        t0 = time.perf_counter()
        changed = relabel(
            path, rng.choice(args.cells, min(100, args.cells), replace=False), "basophil",
            user="bench", reason="benchmark",
        )
        relabel_s = time.perf_counter() - t0

    result = {
        "benchmark": "project",
        "cells": args.cells,
        "patch": [S, S],
        "image_dtype": args.image_dtype,
        "raw": not args.no_raw,
        "patch_filter": store._PATCH_FILTER,
        "generate_s": round(gen_s, 2),
        "write_s": round(write_s, 2),
        "write_cells_per_s": round(args.cells / write_s),
        "size_bytes": size,
        "size_mb": round(size / 1e6, 1),
        "open_s_median": round(statistics.median(opens), 4),
        "open_s_all": [round(t, 4) for t in opens],
        "patch_read_us_median": round(float(np.median(lat_us)), 1),
        "patch_read_us_p99": round(float(np.percentile(lat_us, 99)), 1),
        "raw_read_us_median": round(float(np.median(raw_lat)) * 1e6, 1),
        "images_256_random_s": round(batch256, 4),
        "relabel_100_s": round(relabel_s, 3),
        "relabel_changed": changed,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
