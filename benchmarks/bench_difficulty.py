"""How hard is the simulated four-part differential? LeNet5 on ~8k simulated cells.

Usage::

    .venv/bin/python -m benchmarks.bench_difficulty [--frames 900] [--seed 7]
        [--label-noise 0.03] [--train-seed 0] [--arch lenet5] [--dir DIR] [--threads N]

Simulates ``simulate_qpi(DIR, QPISimConfig(frames, seed, label_noise))``, segments it with
``segment_inputs`` into ``DIR/P.h5`` (both reused when ``DIR`` already holds them), trains
with the default :class:`TrainConfig` (seed ``--train-seed``) on ``training_data`` and
scores the test split against the given labels and against the simulator's true classes
(cells matched to ``truth.csv`` rows by run, frame and nearest centroid within 3 px, as
``engine.synth.scoring`` does). Issue 3 wants LeNet5 near the paper: macro-F1 0.90-0.96.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from sklearn.metrics import confusion_matrix, f1_score

from hemalens.engine.ingest import segment_inputs
from hemalens.engine.io import read_manifest
from hemalens.engine.project import Project
from hemalens.engine.synth import QPISimConfig, simulate_qpi
from hemalens.engine.synth.scoring import read_truth
from hemalens.engine.train import TrainConfig, train_classifier, training_data


def match_truth(truth_csv: Path, project: Project, match_px: float = 3.0) -> list[dict | None]:
    """Truth row of every cell of the project (None when no object lies within match_px)."""
    truth = read_truth(truth_csv)
    cells = project.cells
    runs = np.asarray([str(r) for r in project.inputs["run"]], dtype=object)
    run_of = runs[cells["input_id"]]
    by_key: dict[tuple[str, int], list[dict]] = {}
    for row in truth:
        by_key.setdefault((row["run"], int(row["frame"])), []).append(row)
    trees = {
        k: cKDTree(np.array([[float(r["x"]), float(r["y"])] for r in rows]))
        for k, rows in by_key.items()
    }
    out: list[dict | None] = []
    for i in range(project.n_cells):
        key = (str(run_of[i]), int(cells["frame"][i]))
        tree = trees.get(key)
        if tree is None:
            out.append(None)
            continue
        d, j = tree.query([float(cells["x"][i]), float(cells["y"][i])])
        out.append(by_key[key][j] if d <= match_px else None)
    return out


@torch.no_grad()
def predict(model, images: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = [
        model(model.preprocess(torch.from_numpy(images[s : s + batch]))).argmax(1).numpy()
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--label-noise", type=float, default=0.03)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--arch", default="lenet5")
    ap.add_argument("--dir", type=Path, default=None, help="keep/reuse simulation and project")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmpd:
        work = args.dir or Path(tmpd)
        work.mkdir(parents=True, exist_ok=True)
        project_path = work / "P.h5"
        t0 = time.perf_counter()
        if not project_path.exists():
            simulate_qpi(work, QPISimConfig(frames=args.frames, seed=args.seed,
                                            label_noise=args.label_noise))
            segment_inputs(read_manifest(work / "manifest.csv"), project_path)
        t_prep = time.perf_counter() - t0
        with Project.open(project_path) as project:
            images, labels, cell_ids, donors, class_names = training_data(project)
            truth = match_truth(work / "truth.csv", project)
        config = TrainConfig(arch=args.arch, seed=args.train_seed)
        result = train_classifier(images, labels, len(class_names), config, donors=donors)
        test = result.split["test"]
        pred = predict(result.model, images[test])
        given = labels[test]
        names = np.array(class_names)
        true_names = np.array([
            (truth[c] or {}).get("true_class", "") for c in cell_ids[test]
        ])
        in_focus = np.array([
            (truth[c] or {}).get("in_focus", "") == "True" for c in cell_ids[test]
        ])
        leuko = np.isin(true_names, names)  # erythrocytes, unmatched objects left out
        true_codes = np.array([class_names.index(t) for t in true_names[leuko]], dtype=int)
        f1_true = f1_score(true_codes, pred[leuko], average=None, labels=range(len(names)))
        f1_given = f1_score(given, pred, average=None, labels=range(len(names)))
        all_true = np.array([(truth[c] or {}).get("true_class", "") for c in cell_ids])
        report = {
            "frames": args.frames,
            "sim_seed": args.seed,
            "label_noise": args.label_noise,
            "arch": args.arch,
            "cells": int(len(labels)),
            "test_cells": int(test.size),
            "test_cells_true_leukocyte": int(leuko.sum()),
            "test_cells_not_in_focus": int((~in_focus).sum()),
            "training_set_given_equals_true": float(np.mean(all_true == names[labels])),
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "val_macro_f1": round(result.val_macro_f1, 4),
            "seconds": round(result.seconds, 1),
            "seconds_simulate_segment": round(t_prep, 1),
            "test_macro_f1_given": round(float(f1_score(given, pred, average="macro")), 4),
            "test_macro_f1_true": round(float(np.mean(f1_true)), 4),
            "test_accuracy_given": round(float(np.mean(pred == given)), 4),
            "per_class_f1_given": dict(zip(class_names, f1_given.round(4).tolist(), strict=True)),
            "per_class_f1_true": dict(zip(class_names, f1_true.round(4).tolist(), strict=True)),
            "confusion_true": {
                "classes": class_names,
                "rows_true_cols_pred": confusion_matrix(
                    true_codes, pred[leuko], labels=range(len(names))
                ).tolist(),
            },
            "torch_threads": torch.get_num_threads(),
        }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
