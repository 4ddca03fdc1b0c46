"""Benchmark: per-cell latency of every explanation method; LIME ensemble vs lime's own.

Untrained models from ``engine.models.build_model`` (LeNet5 at 32 px; AlexNet at 64 px by
default) explain smoothed random 50x50 patches (speed does not depend on the weights;
SLIC sees image-like texture). Each method runs through ``explain_cells`` on ``--cells``
cells (LeNet5) and ``--alexnet-cells`` cells (AlexNet: LIME's 4000 and occlusion's 2025
forward passes per cell take seconds on a CPU), after a one-cell warm-up; methods that do
not apply (Grad-CAM on LeNet5) are listed as such.

LIME: the vectorised 4-SLIC ensemble (4 x ``--samples`` masks, one model call per cell)
runs side by side with ``lime.lime_image.LimeImageExplainer(random_state=seed)
.explain_instance(..., batch_size=1000)`` once per SLIC segmentation on the same LeNet5
cells, with the same segmentations and masks; the reference map (mean of the four painted
``local_exp`` weights) is compared with ours as a check. Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_explain [--cells 20] [--alexnet-cells 2]
        [--samples 1000] [--input-size 64] [--device cpu|cuda|auto] [--threads N]
        [--part all|methods|lime]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from threadpoolctl import threadpool_limits

from hemalens.engine.explain.gradients import NotApplicable
from hemalens.engine.explain.lime_ensemble import SLIC_PARAMS, model_probs_fn, slic_segments
from hemalens.engine.explain.methods import METHODS, explain_cells, predicted_classes
from hemalens.engine.models import DEFAULT_DROPOUT, ModelSpec, build_model


def smooth_patches(n: int, side: int = 50, seed: int = 0) -> np.ndarray:
    """Smoothed uniform noise scaled to [0, 1] per patch."""
    rng = np.random.default_rng(seed)
    p = np.stack([gaussian_filter(rng.random((side, side)), 2) for _ in range(n)])
    p = (p - p.min(axis=(1, 2), keepdims=True)) / np.ptp(p, axis=(1, 2), keepdims=True)
    return p.astype(np.float32)


def bench_methods(model: torch.nn.Module, patches: np.ndarray, samples: int) -> dict:
    """Milliseconds per cell of every method on ``patches``."""
    out: dict = {"cells": len(patches)}
    for method in METHODS:
        kw = {"num_samples": samples} if method == "lime" else {}
        warm = {"lime": {"num_samples": 50}, "occlusion": {"stride": 6}}.get(method, {})
        try:
            explain_cells(model, patches[:1], method, **warm)  # warm-up
        except NotApplicable as err:
            out[method] = f"not applicable: {err}"
            continue
        res = explain_cells(model, patches, method, **kw)
        out[method] = {"ms_per_cell": round(1e3 * res.seconds / len(patches), 1)}
    return out


def bench_lime(model: torch.nn.Module, patches: np.ndarray, samples: int, seed: int) -> dict:
    """LIME ensemble vs LimeImageExplainer(batch_size=1000) x 4 SLIC on the same cells."""
    from lime.lime_image import LimeImageExplainer

    model.eval()
    targets = predicted_classes(model, patches)
    probs_fn = model_probs_fn(model)
    explain_cells(model, patches[:1], "lime", num_samples=50)  # warm-up
    c0 = time.process_time()
    ours = explain_cells(model, patches, "lime", targets=targets, seed=seed, num_samples=samples)
    cpu_ours = time.process_time() - c0

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        return probs_fn(np.ascontiguousarray(images[..., 0], dtype=np.float32))

    ref = np.zeros_like(ours.maps)
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
        for i, patch in enumerate(patches):
            painted = []
            for params in SLIC_PARAMS:
                seg = slic_segments(patch, *params)
                exp = LimeImageExplainer(random_state=seed).explain_instance(
                    patch, classifier_fn, labels=(int(targets[i]),), top_labels=None,
                    num_samples=samples, batch_size=1000, random_seed=0,
                    segmentation_fn=lambda rgb, seg=seg: seg,
                )
                w = np.zeros(int(seg.max()) + 1)
                for feature, weight in exp.local_exp[int(targets[i])]:
                    w[feature] = weight
                painted.append(w[seg])
            ref[i] = np.mean(painted, axis=0)
    t_ref, cpu_ref = time.perf_counter() - t0, time.process_time() - c0
    ms_ours = 1e3 * ours.seconds / len(patches)
    ms_ref = 1e3 * t_ref / len(patches)
    return {
        "cells": len(patches),
        "samples_per_segmentation": samples,
        "ensemble_ms_per_cell": round(ms_ours, 1),
        "lime_image_explainer_ms_per_cell": round(ms_ref, 1),
        "speedup": round(ms_ref / ms_ours, 2),
        # process CPU time: the wall time an idle machine would give at 1 torch thread
        "ensemble_cpu_ms_per_cell": round(1e3 * cpu_ours / len(patches), 1),
        "lime_image_explainer_cpu_ms_per_cell": round(1e3 * cpu_ref / len(patches), 1),
        "cpu_speedup": round(cpu_ref / cpu_ours, 2),
        "max_abs_map_diff": float(np.abs(ours.maps - ref).max()),
        "max_abs_map": float(np.abs(ref).max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20, help="LeNet5 cells per method")
    parser.add_argument("--alexnet-cells", type=int, default=2, help="AlexNet cells per method")
    parser.add_argument("--samples", type=int, default=1000, help="LIME masks per segmentation")
    parser.add_argument("--input-size", type=int, default=64, help="AlexNet input side")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads (both sides of the LIME comparison)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("all", "methods", "lime"), default="all",
                        help="per-method latencies, the LIME comparison, or both")
    args = parser.parse_args(argv)
    if args.threads:  # torch and the BLAS behind scikit-learn/numpy alike
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    patches = smooth_patches(max(args.cells, args.alexnet_cells), seed=args.seed)
    result: dict = {
        "benchmark": "explain",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "models": "untrained, engine.models.build_model",
        "patch": [50, 50],
    }
    torch.manual_seed(0)
    lenet = build_model(ModelSpec("lenet5", 4, DEFAULT_DROPOUT["lenet5"], 32)).to(device)
    torch.manual_seed(0)
    alexnet = build_model(
        ModelSpec("alexnet", 4, DEFAULT_DROPOUT["alexnet"], args.input_size)
    ).to(device)
    if args.part in ("all", "methods"):
        result["lenet5"] = bench_methods(lenet, patches[:args.cells], args.samples)
        result["alexnet"] = {"input_size": args.input_size,
                             **bench_methods(alexnet, patches[:args.alexnet_cells], args.samples)}
    if args.part in ("all", "lime"):
        result["lime_vs_lime_image_explainer"] = bench_lime(
            lenet, patches[:args.cells], args.samples, args.seed
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
