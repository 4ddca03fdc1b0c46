"""End-to-end import speed: simulated runs through `segment_inputs`, phase vs hologram path.

Both paths read the same simulated frames in the same run, so their ratio is meaningful
on a noisy machine. ``--workers N`` imports on a LocalCluster of N worker processes,
started (and warmed) before the clock runs. Prints one JSON object.

    python -m benchmarks.bench_ingest [--frames 300] [--workers 2] [--repeats 2]

To compare two source trees side by side, see :mod:`benchmarks.compare_trees`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from hemalens.engine.ingest import segment_inputs
from hemalens.engine.io import read_manifest
from hemalens.engine.scaleout import Cluster
from hemalens.engine.synth import QPISimConfig, simulate_qpi
from hemalens.engine.synth.scoring import score_segmentation


@contextlib.contextmanager
def _cluster(workers: int) -> Iterator[Cluster | None]:
    """A warmed LocalCluster of ``workers`` processes (None: in-process)."""
    if workers <= 0:
        yield None
        return
    from dask import config
    from distributed import Client, LocalCluster

    from hemalens.engine.scaleout import WORKER_ENVIRON

    with config.set(WORKER_ENVIRON):  # as open_executor starts its local clusters
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                             dashboard_address=None, silence_logs=40)
    client = Client(local, set_as_default=False)
    try:
        client.run(lambda: __import__("hemalens.engine.ingest") and None)
        yield Cluster(scheduler=local.scheduler_address)
    finally:
        client.close()
        local.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0,
                        help="LocalCluster worker processes (0: in-process)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many imports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _cluster(args.workers) as cluster:
        out = Path(tmp)
        t0 = time.perf_counter()
        simulate_qpi(out, QPISimConfig(frames=args.frames, seed=args.seed, holograms=True))
        sim_s = time.perf_counter() - t0
        specs = read_manifest(out / "manifest.csv")
        result: dict[str, object] = {
            "benchmark": "ingest",
            "cpu_count": os.cpu_count(),
            "frames": args.frames,
            "workers": args.workers,
            "simulate_seconds": round(sim_s, 3),
        }
        for modality in ("phase", "hologram"):
            chosen = [s for s in specs if s.modality == modality]
            project = out / f"{modality}.h5"
            seconds = float("inf")
            for _ in range(max(1, args.repeats)):
                shutil.rmtree(project, ignore_errors=True)
                t0 = time.perf_counter()
                report = segment_inputs(chosen, project, cluster=cluster)
                seconds = min(seconds, time.perf_counter() - t0)
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
