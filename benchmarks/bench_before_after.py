"""Before/after the project folder: relabel and predict on the same 100k-cell project.

Usage::

    .venv/bin/python -m benchmarks.bench_before_after [--cells 100000] [--passes 100]
        [--before 5d2524c] [--dir DIR]

"Before" is the version-1 code (one HDF5 file; every write copied it whole), checked out
from git at ``--before`` into a temporary worktree and run in a subprocess; "after" is
this checkout. Both run on the same machine in the same invocation, on the same data: a
version-1 project of ``--cells`` 50x50 phase cells with raw patches (written by the old
code) and a LeNet5, and its migrated copy. Timed: relabel of 100 cells, and
``predict_project`` end to end (MC passes, calibrated) split into compute and write.
Prints one JSON object with both sides and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in both codebases (only APIs that exist in both): build, relabel, predict.
_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    import torch
    action, path = sys.argv[1], Path(sys.argv[2])
    out = {}
    if action == "build":
        from benchmarks.bench_project import fake_batch, CLASSES, S
        from hemalens.engine.project.store import ProjectWriter
        from hemalens.engine.models import ModelSpec, build_model
        from hemalens.engine.models.store import save_model
        from hemalens.engine.train import TrainConfig, TrainResult
        n = int(sys.argv[3])
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES) as w:
            w.add_input({"file": "bench.tif", "modality": "phase", "pixel_size_um": 0.2})
            done, frame = 0, 0
            while done < n:
                k = min(400, n - done)
                cells, images, raw = fake_batch(rng, k, frame)
                cells["original_label"] = cells["given_label"]
                w.append(cells, images, raw)
                done, frame = done + k, frame + 1
        spec = ModelSpec("lenet5", len(CLASSES), 0.25, 32)
        torch.manual_seed(0)
        res = TrainResult(model=build_model(spec).eval(), spec=spec,
                          split={"train": np.arange(10), "val": np.arange(10, 20),
                                 "test": np.arange(20, 30)},
                          history=[], best_epoch=1, val_macro_f1=0.5, seconds=0.0,
                          device="cpu", config=TrainConfig())
        save_model(path, "lenet5", res, CLASSES, temperature=1.3,
                   extra={"calibration": {"temperature": 1.3, "mc_temperature": 1.1}})
        out["build_s"] = time.perf_counter() - t0
    elif action == "relabel":
        from hemalens.engine.project.labels import relabel
        ids = np.random.default_rng(1).choice(int(sys.argv[3]), 100, replace=False)
        times = []
        for k in range(3):
            t0 = time.perf_counter()
            relabel(path, ids, ["basophil", "monocyte", "neutrophil"][k], user="bench")
            times.append(time.perf_counter() - t0)
        out["relabel_100_s"] = times
    elif action == "predict":
        import hemalens.engine.workflows.predict as wf
        real = wf.write_predictions
        spent = {}
        def timed(*a, **k):
            t0 = time.perf_counter()
            real(*a, **k)
            spent["write_s"] = time.perf_counter() - t0
        wf.write_predictions = timed
        t0 = time.perf_counter()
        r = wf.predict_project(path, passes=int(sys.argv[3]))
        out["predict_s"] = time.perf_counter() - t0
        out["write_s"] = spent["write_s"]
        out["cells"] = r["cells"]
    print(json.dumps(out))
""")


def run(env: dict, cwd: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, *args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def old_checkout(rev: str, tmp: Path) -> tuple[dict, Path]:
    """A worktree of ``rev`` importable as ``hemalens`` (environment, working folder)."""
    tree = tmp / "before-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    pkg = tmp / "before-pkg"
    (pkg / "hemalens").mkdir(parents=True)
    (pkg / "hemalens" / "__init__.py").write_text("")
    for sub in ("engine", "resources"):
        (pkg / "hemalens" / sub).symlink_to(tree / sub)
    env = dict(os.environ, PYTHONPATH=f"{pkg}{os.pathsep}{tree}")
    return env, tree


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--passes", type=int, default=100)
    ap.add_argument("--before", default="5d2524c", help="git revision of the version-1 code")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmpdir:
        tmp = Path(tmpdir)
        old_env, tree = old_checkout(args.before, tmp)
        new_env = dict(os.environ, PYTHONPATH=str(ROOT))
        try:
            v1 = tmp / "old.h5"
            built = run(old_env, tree, "build", str(v1), str(args.cells))
            size = v1.stat().st_size
            v2 = tmp / "new.hemalens"
            shutil.copyfile(v1, v2)
            t0 = time.perf_counter()
            from hemalens.engine.project.migrate import migrate_v1

            migrate_v1(v2)
            migrate_s = time.perf_counter() - t0
            before = {**run(old_env, tree, "relabel", str(v1), str(args.cells)),
                      **run(old_env, tree, "predict", str(v1), str(args.passes))}
            after = {**run(new_env, ROOT, "relabel", str(v2), str(args.cells)),
                     **run(new_env, ROOT, "predict", str(v2), str(args.passes))}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    result = {
        "benchmark": "before_after",
        "cells": args.cells, "passes": args.passes, "before_rev": args.before,
        "v1_file_mb": round(size / 1e6), "build_s": round(built["build_s"], 1),
        "migrate_s": round(migrate_s, 2),
        "before": {"relabel_100_s": round(med(before["relabel_100_s"]), 4),
                   "predict_s": round(before["predict_s"], 2),
                   "predict_write_s": round(before["write_s"], 3)},
        "after": {"relabel_100_s": round(med(after["relabel_100_s"]), 4),
                  "predict_s": round(after["predict_s"], 2),
                  "predict_write_s": round(after["write_s"], 3)},
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }
    b, a = result["before"], result["after"]
    result["speedup"] = {
        "relabel_100": round(b["relabel_100_s"] / a["relabel_100_s"], 1),
        "predict_end_to_end": round(b["predict_s"] / a["predict_s"], 2),
        "predict_write": round(b["predict_write_s"] / a["predict_write_s"], 1),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
