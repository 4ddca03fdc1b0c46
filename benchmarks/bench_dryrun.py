"""Dry-run speed: the "small" grid on 5,000 × 256 embeddings, and one epoch of interventions.

Usage::

    .venv/bin/python -m benchmarks.bench_dryrun [--n 5000] [--dim 256] [--classes 16]
        [--iterations 50] [--folds 6] [--grid small] [--combos paper|c] [--threads 1]

Synthetic TML-like embedding (see ``synthetic_embedding``): 16 imbalanced, overlapping
classes (largest : smallest about 10 : 1, SVM macro-F1 near 0.7), rows L2-normalised;
regions are random blocks of 20 cells.
Times ``compute_interventions`` for one epoch's worth (50 iterations) per type combination,
then the whole ``dry_run`` over the paper's six combinations with the chosen grid. Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from hemalens.engine.embed.dryrun import GRIDS, PAPER_COMBOS, dry_run
from hemalens.engine.embed.interventions import InterventionParams, compute_interventions


def synthetic_embedding(n: int, dim: int, classes: int, seed: int = 0):
    """Overlapping, imbalanced, L2-normalised clusters and region ids (blocks of 20).

    Class centres (unit norm) and most of the noise live in a 16-d subspace, a little
    isotropic noise in all ``dim``; the SVM macro-F1 comes out near 0.7, like the paper's
    triplet embedding (0.69).
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 16)))[0]
    centres = rng.normal(size=(classes, 16)) @ basis.T
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    p = np.geomspace(1.0, 0.1, classes)
    y = rng.choice(classes, size=n, p=p / p.sum())
    X = centres[y] + rng.normal(scale=0.35, size=(n, 16)) @ basis.T
    X += rng.normal(scale=0.05, size=(n, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    groups = rng.permutation(np.arange(n) // 20)
    return X, y, groups


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--folds", type=int, default=6)
    ap.add_argument("--grid", default="small", choices=sorted(GRIDS))
    ap.add_argument("--combos", default="paper", help="'paper' or e.g. 'c;c,s'")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y, groups = synthetic_embedding(args.n, args.dim, args.classes)
    combos = (
        PAPER_COMBOS
        if args.combos == "paper"
        else [tuple(c.split(",")) for c in args.combos.split(";")]
    )

    epoch = {}
    for types in combos:
        params = InterventionParams(types=types)
        t0 = time.perf_counter()
        compute_interventions(X, y, params, 50, rng=0)
        epoch[",".join(params.types)] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    res = dry_run(X, y, groups, combos, grid=args.grid, iterations=args.iterations,
                  folds=args.folds)  # fmt: skip
    secs = time.perf_counter() - t0
    curves = [r for recs in res["curves"].values() for r in recs]
    evaluations = sum(len(r["f1"]) - 1 for r in curves) * args.folds
    report = {
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "grid": args.grid,
        "iterations": args.iterations,
        "folds": args.folds,
        "compute_interventions_50_iter_seconds": epoch,
        "dry_run_seconds": round(secs, 1),
        "settings": len(curves),
        "svm_fits": evaluations,
        "seconds_per_svm_fit": round(secs / max(evaluations, 1), 4),
        "baseline_f1": round(res["settings"]["baseline_f1"], 4),
        "best": [
            {"types": ",".join(b["types"]), "max_f1": round(b["max_f1"], 4),
             "iterations_to_max": b["iterations_to_max"]}
            for b in res["best"]
        ],  # fmt: skip
        "criterion": res["criterion"],
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
