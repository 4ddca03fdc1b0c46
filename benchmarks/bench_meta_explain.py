"""Benchmark: meta-explanations (paper 1, §4.4) over many cells.

Synthetic 50x50 explanation maps are drawn from a few templates (one per class: a disc,
a ring, a left/right split, a small nucleus blob) plus Gaussian noise, with 10 % of the
labels swapped and confidences uniform in [1/K, 1]. Timed stages, in one process:

- ``aggregate``: :func:`~hemalens.engine.explain.meta.aggregate_by_confidence` (6 bins),
- ``pca``, ``tsne`` and ``kmeans``: :func:`~hemalens.engine.explain.meta.cluster_explanations`
  (optional PCA, openTSNE on the flattened maps, then k-means with k = classes on the
  2-D map),
- ``render_grid`` / ``render_clusters``: the two PNGs of paper Figs. 6 and 7,
- ``store_write`` / ``store_read`` (unless ``--no-store``): the maps into and out of the
  cache of a fresh project (:mod:`hemalens.engine.explain.store`), in chunks of 512 cells
  as ``hemalens explain`` saves them, each an atomic copy of the project.

The adjusted Rand index of the clusters against the templates is reported as a sanity
check (1 = every template recovered). Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_meta_explain [--cells 5000] [--size 50]
        [--classes 4] [--noise 1.0] [--n-jobs 1] [--pca N] [--out DIR] [--no-store]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from hemalens.engine.explain.meta import aggregate_by_confidence, cluster_explanations
from hemalens.engine.explain.render import cluster_png, meta_grid_png

CLASSES = ["monocyte", "lymphocyte", "neutrophil", "eosinophil", "basophil", "other"]


def synthetic_maps(n: int, size: int, k: int, noise: float, seed: int = 0):
    """Maps from ``k`` templates plus noise; returns maps, template ids, labels, confidence."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx) / size
    base = [(r < 0.3) * 1.0, ((r > 0.25) & (r < 0.4)) * 1.0, np.sign(xx) * 0.8,
            np.exp(-(r / 0.1) ** 2) - 0.3 * (r < 0.35), np.cos(8 * r), -np.sign(yy) * 0.8]
    tmpl = np.stack(base[:k]).astype(np.float32)
    truth = rng.integers(0, k, n)
    maps = tmpl[truth] + noise * rng.standard_normal((n, size, size), dtype=np.float32)
    labels = truth.copy()
    swap = rng.random(n) < 0.1
    labels[swap] = rng.integers(0, k, int(swap.sum()))
    conf = rng.uniform(1 / k, 1.0, n)
    return maps, truth, labels, conf


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return round(time.perf_counter() - t0, 3), out


def bench_store(maps: np.ndarray, labels: np.ndarray, folder: Path) -> dict:
    """Write the maps into a fresh project's cache in chunks of 512, read them back."""
    from hemalens.engine.explain.store import read_explanations, write_explanations
    from hemalens.engine.project.store import ProjectWriter

    n, size = maps.shape[0], maps.shape[1]
    path = folder / "bench.h5"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(size, size),
                       classes=CLASSES[: int(labels.max()) + 1]) as w:
        w.add_input({"file": "synthetic.tif"})
        w.append({"input_id": np.zeros(n, int), "given_label": labels},
                  np.clip(maps * 0.1 + 0.5, 0, 1))
    size_before = path.stat().st_size
    stamp = "2024-01-01T00:00:00.000+00:00"
    t0 = time.perf_counter()
    for start in range(0, n, 512):
        ids = np.arange(start, min(n, start + 512))
        write_explanations(path, "bench", "lime", ids, maps[ids], labels[ids],
                           model_created=stamp, settings={"seed": 0})
    t_write = time.perf_counter() - t0
    t_read, (back, _, computed) = _timed(
        lambda: read_explanations(path, "bench", "lime", model_created=stamp))
    scale = np.abs(maps).reshape(n, -1).max(axis=1)[:, None, None]
    return {
        "store_write": round(t_write, 3),
        "store_read": t_read,
        "store_chunks": -(-n // 512),
        "store_mb": round((path.stat().st_size - size_before) / 1e6, 2),
        "store_max_rel_err": float(np.max(np.abs(back - maps) / scale)),
        "store_all_computed": bool(computed.all()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--size", type=int, default=50, help="map side in pixels")
    parser.add_argument("--classes", type=int, default=4, choices=range(2, 7))
    parser.add_argument("--noise", type=float, default=1.0, help="noise SD (templates ~1)")
    parser.add_argument("--n-jobs", type=int, default=1, help="openTSNE threads")
    parser.add_argument("--pca", type=int, default=None,
                        help="PCA components before t-SNE (default: none, as in the paper)")
    parser.add_argument("--out", default=None, help="keep the PNGs here (default: temp)")
    parser.add_argument("--no-store", action="store_true", help="skip the project cache")
    args = parser.parse_args(argv)

    from sklearn.metrics import adjusted_rand_score

    maps, truth, labels, conf = synthetic_maps(args.cells, args.size, args.classes, args.noise)
    names = CLASSES[: args.classes]
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        t_all = time.perf_counter()
        stages["aggregate"], grid = _timed(
            lambda: aggregate_by_confidence(maps, labels, conf, args.classes))
        t_clu, res = _timed(lambda: cluster_explanations(
            maps, labels, args.classes, seed=0, class_names=names, n_jobs=args.n_jobs,
            pca_components=args.pca))
        stages.update(res.seconds)
        stages["cluster_other"] = round(t_clu - sum(res.seconds.values()), 3)
        stages["render_grid"], _ = _timed(lambda: meta_grid_png(grid, names, out / "grid.png"))
        stages["render_clusters"], _ = _timed(
            lambda: cluster_png(res, names, out / "clusters.png"))
        stages["total_meta"] = round(time.perf_counter() - t_all, 3)
        store = {} if args.no_store else bench_store(maps, labels, Path(tmp))
    result = {
        "benchmark": "meta_explain",
        "cells": args.cells,
        "map": [args.size, args.size],
        "classes": args.classes,
        "noise": args.noise,
        "opentsne_threads": args.n_jobs,
        "perplexity": res.perplexity,
        "seconds": stages,
        "ari_vs_templates": round(float(adjusted_rand_score(truth, res.assignment)), 4),
        "cluster_sizes": [c["size"] for c in res.clusters],
        "machine": platform.processor() or platform.machine(),
        **store,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
