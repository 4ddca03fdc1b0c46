"""End-to-end `predict` speed: cells/s through `predict_project` (100 MC passes, calibrated).

Builds a project from simulated frames, trains a quick LeNet5 (a few epochs: speed, not
accuracy, is measured) and times prediction of every object. Prints one JSON object.

    python -m benchmarks.bench_predict [--frames 300] [--passes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from hemalens.engine.ingest import segment_inputs
from hemalens.engine.io import read_manifest
from hemalens.engine.synth import QPISimConfig, simulate_qpi
from hemalens.engine.train import TrainConfig
from hemalens.engine.workflows.predict import predict_project
from hemalens.engine.workflows.train import train_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--arch", default="lenet5", choices=["lenet5", "alexnet"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        simulate_qpi(out / "sim", QPISimConfig(frames=args.frames, seed=3))
        project = out / "P.h5"
        segment_inputs(read_manifest(out / "sim" / "manifest.csv"), project)
        t0 = time.perf_counter()
        train_project(project, TrainConfig(arch=args.arch, epochs=2, patience=2), passes=20)
        train_s = time.perf_counter() - t0
        result = predict_project(project, passes=args.passes)
    print(json.dumps({
        "benchmark": "predict",
        "arch": args.arch,
        "cells": result["cells"],
        "passes": args.passes,
        "seconds": result["seconds"],
        "cells_per_s": result["cells_per_s"],
        "quick_train_seconds": round(train_s, 2),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }))


if __name__ == "__main__":
    main()
