"""Benchmark: MC dropout with a cached trunk vs T naive full forward passes.

Untrained models from ``engine.models.build_model`` (LeNet5 at 32 px, AlexNet at 64 px by
default; dropout at the paper's rates) classify random 50x50 patches; speed does not depend
on the weights. Both samplers run in the same process, one after the other, on the same
cells. The naive sampler is timed on the first ``--naive-cells`` cells (default: all cells
up to 1000; its cost is linear in cells, so cells/s is comparable); set it to ``--cells``
for a full side-by-side run. The MC means of both samplers on the common cells are compared
in units of their Monte-Carlo standard error as a sanity check. Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_mc_dropout [--cells 10000] [--passes 100]
        [--arch lenet5|alexnet|both] [--naive-cells N] [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from hemalens.engine.calibrate import mc_dropout_probs
from hemalens.engine.calibrate.inference import _head_split
from hemalens.engine.models import DEFAULT_DROPOUT, DEFAULT_INPUT_SIZE, ModelSpec, build_model


def _timed(fn) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_arch(arch: str, patches: np.ndarray, args, device: torch.device) -> dict:
    """Time both samplers for one architecture."""
    size = args.input_size if arch == "alexnet" and args.input_size else DEFAULT_INPUT_SIZE[arch]
    spec = ModelSpec(arch, 4, DEFAULT_DROPOUT[arch], size)
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    n_naive = min(args.naive_cells or min(len(patches), 1000), len(patches))
    kw = {"passes": args.passes, "batch_size": args.batch_size, "seed": 0}
    for warm in (True, False):  # warm-up (allocator, kernels, threads)
        mc_dropout_probs(model, patches[:8], passes=2, cached_trunk=warm)
    t_cached, cached = _timed(lambda: mc_dropout_probs(model, patches, cached_trunk=True, **kw))
    t_naive, naive = _timed(
        lambda: mc_dropout_probs(model, patches[:n_naive], cached_trunk=False, **kw)
    )
    common = cached[:, :n_naive]
    se = np.sqrt((common.var(0) + naive.var(0)) / args.passes)
    diff = np.abs(common.mean(0) - naive.mean(0))
    rate_cached = len(patches) / t_cached
    rate_naive = n_naive / t_naive
    return {
        "spec": spec.to_dict(),
        "head_prefix_cached": _head_split(model) is not None,
        "cached": {"cells": len(patches), "seconds": round(t_cached, 3),
                   "cells_per_s": round(rate_cached, 2)},
        "naive": {"cells": n_naive, "seconds": round(t_naive, 3),
                  "cells_per_s": round(rate_naive, 2)},
        "speedup": round(rate_cached / rate_naive, 2),
        "max_mean_diff_in_se": round(float(np.max(diff / np.maximum(se, 1e-12))), 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000, help="cells for the cached sampler")
    parser.add_argument("--passes", type=int, default=100, help="MC passes T")
    parser.add_argument("--arch", choices=("lenet5", "alexnet", "both"), default="both")
    parser.add_argument("--naive-cells", type=int, default=None,
                        help="cells for the naive sampler (default: min(cells, 1000))")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--input-size", type=int, default=None,
                        help="AlexNet input side (default 64; 224 as in the paper)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (1 is faster on a loaded 2-core machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    patches = np.random.default_rng(0).random((args.cells, 50, 50), dtype=np.float32)
    archs = ("lenet5", "alexnet") if args.arch == "both" else (args.arch,)
    result: dict = {
        "benchmark": "mc_dropout",
        "passes": args.passes,
        "batch_size": args.batch_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "models": "untrained, engine.models.build_model",
    }
    for arch in archs:
        result[arch] = bench_arch(arch, patches, args, device)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
