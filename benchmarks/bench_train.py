"""Training speed: seconds per epoch of LeNet5 and AlexNet (64 and 224 px input).

Usage::

    .venv/bin/python -m benchmarks.bench_train [--cells 2000] [--epochs 2]
        [--models lenet5,alexnet64,alexnet224] [--device cpu] [--threads N]

Synthetic 50x50 phase-like patches (4 classes of sphere-like cells with a nucleus bump),
the default 70/20/10 split, batch size 128, augmentation on, patience high enough that
every epoch runs. An epoch is one pass over the training split plus the validation pass.
Prints one JSON object: per model the epoch times, their median (later epochs, the first
one also pays for warm-up when there are several) and training cells per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import numpy as np
import torch

from hemalens.engine.train import TrainConfig, train_classifier

MODELS = {
    "lenet5": {"arch": "lenet5"},
    "alexnet64": {"arch": "alexnet", "input_size": 64},
    "alexnet224": {"arch": "alexnet", "input_size": 224},
}


def fake_cells(n: int, seed: int = 0, size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Sphere-like cells whose size and brightness depend on one of 4 classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    r = (8 + 1.5 * y + rng.normal(0, 1, n))[:, None, None]
    cx, cy = rng.normal(0, 1.5, (2, n, 1, 1))
    body = np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2, 0, None))
    nuc = np.exp(-((xx - cx - r / 3) ** 2 + (yy - cy) ** 2) / (0.3 * r**2))
    amp = (0.4 + 0.1 * (y % 2) + rng.normal(0, 0.05, n))[:, None, None]
    img = amp * (body + 0.4 * nuc) + rng.normal(0, 0.02, (n, size, size))
    return np.clip(img, 0, 1).astype(np.float32), y


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = fake_cells(args.cells)
    results = {}
    for name in args.models.split(","):
        cfg = TrainConfig(**MODELS[name], epochs=args.epochs, patience=args.epochs + 1,
                          device=args.device)  # fmt: skip
        res = train_classifier(images, labels, 4, cfg)
        secs = [h["seconds"] for h in res.history]
        steady = secs[1:] if len(secs) > 1 else secs
        per_epoch = statistics.median(steady)
        results[name] = {
            "input_size": res.spec.input_size,
            "epoch_seconds": [round(s, 3) for s in secs],
            "seconds_per_epoch": round(per_epoch, 3),
            "train_cells": int(res.split["train"].size),
            "val_cells": int(res.split["val"].size),
            "train_cells_per_s": round(res.split["train"].size / per_epoch, 1),
            "device": res.device,
        }
    report = {
        "cells": args.cells,
        "epochs": args.epochs,
        "batch_size": TrainConfig().batch_size,
        "models": results,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
