"""Issue 13, part 5: does paper 2's "ALI beats TML" reproduce on simulated marrow?

Paper 2's protocol as far as 2 CPU cores allow: ``synth marrow`` cells, **6** region-
disjoint folds (one tests, one validates, four train), RBF-SVM on the embedding, the
small CNN at 64 px from random weights (no ImageNet weights offline, no GPU), a fixed
number of epochs. Every setting runs on the same folds and data in one process. Prints
one JSON object with per-fold and mean ± std test macro-F1 per setting::

    nice -n 5 .venv/bin/python -m benchmarks.bench_ali_claim --cells 2000 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_embed_epoch import config, marrow_data
from hemalens.engine.embed.training import train_embedding

#: name -> (loss, EmbedTrainConfig keywords)
SETTINGS = {
    "TML": ("tml", {}),
    "TML+ALI (c,s, CW, α=0.8, paper)": ("ali", {"class_weights": True, "alpha": 0.8}),
    "TML+ALI (c,s, CW, α=0.05)": ("ali", {"class_weights": True, "alpha": 0.05}),
    "TML+ALI (c,s, CW, α=0.8, θ on the batch)": ("ali", {"class_weights": True, "alpha": 0.8,
                                                         "ali_target": "batch"}),
}


def main(argv: list[str] | None = None) -> dict:
    """Run every setting over the same folds; print and return the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--folds", type=int, default=6)
    ap.add_argument("--svm-every", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", default=None, help="names of SETTINGS to run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = marrow_data(args.cells, args.size, args.seed, Path(tmp))
    out = {"cells": int(data["labels"].size), "folds": args.folds, "epochs": args.epochs,
           "size": args.size, "backbone": "small", "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "results": {}}
    for name, (loss, kw) in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        cfg = config(loss, args, svm_every=args.svm_every, **kw)
        res = train_embedding(data["patches"], data["labels"], data["groups"], cfg,
                              folds=args.folds)
        f1 = [f["test_f1"] for f in res["folds"]]
        out["results"][name] = {
            "test_f1_per_fold": [round(v, 4) for v in f1],
            "mean_pm_std_percent": f"{100 * res['mean_f1']:.1f} ± {100 * res['std_f1']:.1f}",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps({name: out["results"][name]}), flush=True)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
