"""``hemalens evaluate``: repeated independent runs, paper Tables 1 and 2, reliability plots."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.calibrate import plot_reliability_runs, reliability_data
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress
from hemalens.engine.project import Project
from hemalens.engine.scaleout import Cluster, open_executor
from hemalens.engine.train import TrainConfig, stable_split, train_classifier, training_data
from hemalens.engine.workflows.calibration import fit_calibration
from hemalens.engine.workflows.metrics import CALIBRATION_PAIRS, INFERENCE, split_metrics


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def evaluate_run(
    project_path: str, config: TrainConfig, r: int, passes: int, keep_measures: bool,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, calibrate and score run ``r``: the unit of work of :func:`evaluate_project`.

    Runs in-process or on a Dask worker (which reads the project at ``project_path``).
    Torch runs on one thread here wherever the run executes: gradients summed by several
    threads differ in the last bits, and a run must give the same scores on a worker (one
    thread) as in-process.

    Parameters
    ----------
    project_path : str
        The project.
    config : TrainConfig
        Settings; the run uses ``seed + r``.
    r : int
        Run index.
    passes : int
        MC-dropout passes.
    keep_measures : bool
        Keep the per-cell measures (for reliability plots).
    progress : Progress, optional
        Cancellation only.

    Returns
    -------
    dict
        :func:`split_metrics` of the test split, with ``labels`` and ``dropout``.
    """
    import torch

    run_config = replace(config, seed=config.seed + r)
    with Project.open(project_path) as project:
        images, labels, cell_ids, donors, classes = training_data(project)
        try:  # one stable split per run: relabels never move a cell to another part
            split = stable_split(project, cell_ids, seed=run_config.seed,
                                 fractions=config.fractions, test_donor=config.test_donor)
        except ValueError as err:
            raise ProjectError(project_path, str(err)) from err
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            result = train_classifier(images, labels, len(classes), run_config, split=split,
                                      donors=donors, progress=progress)
        except ValueError as err:  # unusable data or split, in one line
            raise ProjectError(project_path, str(err)) from err
        val, test = split["val"], split["test"]
        calibration = fit_calibration(result.model, images[val], labels[val], passes=passes,
                                      seed=run_config.seed)
        score = split_metrics(result.model, images[test], labels[test], calibration,
                              passes=passes, seed=run_config.seed, keep_measures=keep_measures)
    finally:
        torch.set_num_threads(threads)
    score["labels"] = labels[test]
    score["dropout"] = result.spec.dropout
    return score


def evaluate_project(
    project_path: str | Path,
    config: TrainConfig,
    *,
    runs: int = 3,
    passes: int = 100,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
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
    cluster : Cluster, optional
        Where the runs go (:mod:`hemalens.engine.scaleout`), one run per task; default
        in-process. Each run trains on one torch thread, so the tables are identical.

    Returns
    -------
    dict
        ``{"runs", "table1": [...], "table2": [...], "figures": [...], "seconds"}``; one
        table row per (model, dropout, vi, metric), with mean and std over runs.
    """
    t0 = time.perf_counter()
    with open_executor(cluster) as executor:  # reach the cluster before any work
        with Project.open(project_path) as project:
            path = str(Path(project.paths.root).resolve())  # workers open it by this path
            _, labels, cell_ids, _, classes = training_data(project)
            try:  # refuse an unusable split here, in one line, before any run starts
                stable_split(project, cell_ids, seed=config.seed, fractions=config.fractions,
                             test_donor=config.test_donor)
            except ValueError as err:
                raise ProjectError(project_path, str(err)) from None
        if progress is not None:
            progress.set_status(f"evaluating {runs} run(s) ({executor.cluster.describe()})")
            progress.set_progress(0, runs)
        scores: list[dict[str, Any]] = []
        tasks = [(path, config, r, passes, out_dir is not None) for r in range(runs)]
        for r, score in enumerate(executor.map(evaluate_run, tasks, progress=progress,
                                               pass_cancel=True)):
            scores.append(score)
            if progress is not None:
                progress.set_progress(r + 1, runs)
    dropout = scores[-1]["dropout"] if scores else config.dropout
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
