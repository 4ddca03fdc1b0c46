"""Embedding training on simulated marrow: intervention cost per epoch, and TML vs ALI vs PALI.

Usage::

    .venv/bin/python -m benchmarks.bench_embed_epoch [--cells 2000] [--size 64]
        [--epochs 3] [--threads 2] [--device cpu]
    .venv/bin/python -m benchmarks.bench_embed_epoch --compare [--cells 2000] [--epochs 6]
        [--folds 3]

Default mode (paper 2, Fig. 7): trains fold 0 of 3 region folds with ALI (n-D, types c,s)
and PALI (2-D, types c,s), small backbone, and reports per epoch the seconds of
``compute_interventions`` (``intervention_seconds``), of the parametric t-SNE fit/refresh
(PALI only, ``ptsne_seconds``), of the network steps (``train_seconds``) and the whole
epoch (``seconds``, including the epoch-start embedding and the SVM when scored). The
fractions are medians over the epochs. ``--compare`` runs the issue's comparison: TML,
TML+ALI (c,s, class weights) and TML+PALI (c,s), k region folds each, and prints per-fold
and mean ± std test macro-F1 (population std over folds). One JSON object either way.

Data: ``simulate_marrow`` crops (RGB, ``--size`` px, 15 classes, regions nested in slides)
imported as a project with ``import_marrow_patches``; the network input is ``--size``.
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
import torch

from hemalens.engine.embed.folds import region_folds
from hemalens.engine.embed.network import EmbeddingSpec
from hemalens.engine.embed.training import EmbedTrainConfig, train_embedding, train_fold
from hemalens.engine.project import Project
from hemalens.engine.synth.marrow import import_marrow_patches, simulate_marrow
from hemalens.engine.workflows.embed import embedding_data


def marrow_data(cells: int, size: int, seed: int, tmp: Path) -> dict:
    t0 = time.perf_counter()
    simulate_marrow(tmp / "sim", cells=cells, seed=seed, size=size, fmt="h5")
    import_marrow_patches(tmp / "sim", tmp / "marrow.h5")
    with Project.open(tmp / "marrow.h5") as p:
        data = embedding_data(p)
    data["seconds"] = round(time.perf_counter() - t0, 2)
    return data


def config(loss: str, args, **kw) -> EmbedTrainConfig:
    return EmbedTrainConfig(
        loss=loss, types=("c", "s"), epochs=args.epochs, batch_size=args.batch_size,
        lr=1e-3, svm_every=kw.pop("svm_every", args.epochs), patience=1000, seed=args.seed,
        device=args.device, spec=EmbeddingSpec("small", input_size=args.size), **kw,
    )


def epoch_costs(data: dict, args) -> dict:
    split = region_folds(data["labels"], data["groups"], 3, seed=args.seed)[0]
    out = {}
    for loss in ("ali", "pali"):
        res = train_fold(data["patches"], data["labels"], split, config(loss, args))
        h = res.history
        keys = ("seconds", "train_seconds", "embed_seconds", "intervention_seconds",
                "ptsne_seconds", "svm_seconds")
        out[loss] = {
            "epochs": [{k: round(r[k], 4) for k in keys} for r in h],
            "median_intervention_fraction_of_epoch": round(
                statistics.median(r["intervention_seconds"] / r["seconds"] for r in h), 4),
            "median_intervention_fraction_of_training": round(
                statistics.median(r["intervention_seconds"] / r["train_seconds"] for r in h), 4),
            "median_ptsne_fraction_of_epoch": round(
                statistics.median(r["ptsne_seconds"] / r["seconds"] for r in h), 4),
            "train_cells": int(split.train.size),
            "val_f1": round(res.val_f1, 4),
        }
    return out


def compare(data: dict, args) -> dict:
    runs = {
        "TML": config("tml", args, svm_every=args.svm_every),
        "TML+ALI (c,s, CW)": config("ali", args, svm_every=args.svm_every, class_weights=True),
        "TML+PALI (c,s)": config("pali", args, svm_every=args.svm_every),
    }
    out = {}
    for name, cfg in runs.items():
        res = train_embedding(data["patches"], data["labels"], data["groups"], cfg,
                              folds=args.folds)
        f1 = [f["test_f1"] for f in res["folds"]]
        out[name] = {
            "test_f1_per_fold": f1,
            "val_f1_per_fold": [f["val_f1"] for f in res["folds"]],
            "best_epoch_per_fold": [f["best_epoch"] for f in res["folds"]],
            "mean_f1": res["mean_f1"],
            "std_f1": res["std_f1"],
            "mean_pm_std_percent": f"{100 * res['mean_f1']:.1f} ± {100 * res['std_f1']:.2f}",
            "seconds": res["seconds"],
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="default 3 (costs) / 6 (compare)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--svm-every", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--compare", action="store_true", help="TML vs TML+ALI vs PALI, k folds")
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 6 if args.compare else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = marrow_data(args.cells, args.size, args.seed, Path(tmp))
    t0 = time.perf_counter()
    result = {
        "benchmark": "embed_compare" if args.compare else "embed_epoch",
        "cells": int(data["labels"].size),
        "classes": len(data["class_names"]),
        "regions": int(np.unique(data["groups"]).size),
        "size": args.size,
        "epochs": args.epochs,
        "backbone": "small",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "simulate_seconds": data["seconds"],
    }
    result["results"] = compare(data, args) if args.compare else epoch_costs(data, args)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
