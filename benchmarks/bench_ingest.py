"""End-to-end import speed: simulated runs through `segment_inputs`, phase vs hologram path.

Both paths read the same simulated frames in the same run, so their ratio is meaningful
on a noisy machine. Prints one JSON object.

    python -m benchmarks.bench_ingest [--frames 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from hemalens.engine.ingest import segment_inputs
from hemalens.engine.io import read_manifest
from hemalens.engine.synth import QPISimConfig, simulate_qpi
from hemalens.engine.synth.scoring import score_segmentation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        simulate_qpi(out, QPISimConfig(frames=args.frames, seed=args.seed, holograms=True))
        sim_s = time.perf_counter() - t0
        specs = read_manifest(out / "manifest.csv")
        result: dict[str, object] = {
            "benchmark": "ingest",
            "cpu_count": os.cpu_count(),
            "frames": args.frames,
            "simulate_seconds": round(sim_s, 3),
        }
        for modality in ("phase", "hologram"):
            chosen = [s for s in specs if s.modality == modality]
            project = out / f"{modality}.h5"
            t0 = time.perf_counter()
            report = segment_inputs(chosen, project)
            seconds = time.perf_counter() - t0
            score = score_segmentation(out / "truth.csv", project)
            result[modality] = {
                "seconds": round(seconds, 3),
                "frames_per_s": round(args.frames / seconds, 1),
                "objects": report["objects"],
                "cells": report["cells"],
                "recall": round(score["recall"], 4),
                "precision": round(score["precision"], 4),
                "median_rel_diameter_error": round(score["median_rel_diameter_error"], 4),
                "junk_rejected": round(score["junk_rejected"], 4),
            }
        phase, holo = result["phase"], result["hologram"]
        assert isinstance(phase, dict) and isinstance(holo, dict)
        result["hologram_over_phase_time"] = round(holo["seconds"] / phase["seconds"], 2)
        diff = abs(holo["cells"] - phase["cells"]) / phase["cells"]
        result["cell_count_difference"] = round(diff, 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
