"""``hemalens evaluate``: repeated independent runs, paper Tables 1 and 2, reliability plots."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.calibrate import plot_reliability_runs, reliability_data
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, SubProgress, checkpoint
from hemalens.engine.project import Project
from hemalens.engine.train import TrainConfig, stable_split, train_classifier, training_data
from hemalens.engine.workflows.calibration import fit_calibration
from hemalens.engine.workflows.metrics import CALIBRATION_PAIRS, INFERENCE, split_metrics


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def evaluate_project(
    project_path: str | Path,
    config: TrainConfig,
    *,
    runs: int = 3,
    passes: int = 100,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train and score ``runs`` independent models (initialisation and split vary).

    Parameters
    ----------
    project_path : str or Path
        The project (its labelled, QC-passed cells). Nothing is written to it.
    config : TrainConfig
        Architecture and training settings; run ``r`` uses ``seed + r``.
    runs : int
        Number of independent runs (paper: 15).
    passes : int
        MC-dropout passes.
    out_dir : str or Path, optional
        Where reliability plots (PNG) go.
    progress : Progress, optional
        Progress over runs.

    Returns
    -------
    dict
        ``{"runs", "table1": [...], "table2": [...], "figures": [...], "seconds"}``; one
        table row per (model, dropout, vi, metric), with mean and std over runs.
    """
    t0 = time.perf_counter()
    with Project.open(project_path) as project:
        images, labels, cell_ids, donors, classes = training_data(project)
        try:  # one stable split per run: relabels never move a cell to another part
            splits = [stable_split(project, cell_ids, seed=config.seed + r,
                                   fractions=config.fractions, test_donor=config.test_donor)
                      for r in range(runs)]
        except ValueError as err:
            raise ProjectError(project_path, str(err)) from err
    dropout = config.dropout if config.dropout is not None else None
    scores: list[dict[str, Any]] = []
    for r in range(runs):
        checkpoint(progress)
        run_config = replace(config, seed=config.seed + r)
        try:
            split = splits[r]
            result = train_classifier(
                images, labels, len(classes), run_config, split=split, donors=donors,
                progress=SubProgress(progress, r / runs, 0.8 / runs),
            )
        except ValueError as err:  # unusable data or split, in one line
            raise ProjectError(project_path, str(err)) from err
        dropout = result.spec.dropout
        val, test = split["val"], split["test"]
        calibration = fit_calibration(result.model, images[val], labels[val], passes=passes,
                                      seed=run_config.seed)
        scores.append(split_metrics(result.model, images[test], labels[test], calibration,
                                    passes=passes, seed=run_config.seed,
                                    keep_measures=out_dir is not None))
        scores[-1]["labels"] = labels[test]
    base = {"model": config.arch, "dropout": dropout}
    table1 = [
        base | {"vi": mode != "freq", "inference": mode, "metric": metric}
        | _mean_std([s["table1"][mode][metric] for s in scores])
        for mode in INFERENCE for metric in ("precision", "recall", "f1", "accuracy")
    ]
    table2 = []
    for family in CALIBRATION_PAIRS:
        for metric in ("ece", "mce"):
            before = _mean_std([s["table2"][family][metric] for s in scores])
            after = _mean_std([s["table2"][family][f"{metric}_ts"] for s in scores])
            change = (before["mean"] - after["mean"]) / before["mean"] if before["mean"] else 0.0
            table2.append(base | {"vi": family != "freq", "measure": family, "metric": metric,
                                  "uncalibrated": before, "calibrated": after,
                                  "improvement": round(change, 4)})
    figures: list[str] = []
    if out_dir is not None:
        figures = _reliability_figures(Path(out_dir), scores, config.arch)
    return {"runs": runs, "cells": int(len(labels)), "classes": classes, "table1": table1,
            "table2": table2, "figures": figures,
            "seconds": round(time.perf_counter() - t0, 2)}


def _reliability_figures(out_dir: Path, scores: list[dict[str, Any]], arch: str) -> list[str]:
    """One PNG per measure: uncalibrated and calibrated panels, boxes over runs."""
    paths = []
    for family, (raw, cal) in CALIBRATION_PAIRS.items():
        panels = {
            f"{label}": [
                reliability_data(s["measures"][m]["confidence"],
                                 s["measures"][m]["pred"] == s["labels"])
                for s in scores
            ]
            for label, m in (("uncalibrated", raw), ("calibrated", cal))
        }
        path = out_dir / f"reliability_{arch}_{family}.png"
        plot_reliability_runs(panels, path, title=f"{arch}: {family} ({len(scores)} runs)")
        paths.append(str(path))
    return paths
