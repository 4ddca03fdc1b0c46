"""``hemalens predict``: frequentist + MC-dropout predictions, calibrated, into the project."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.calibrate import (
    StdConfidence,
    confidence_measures,
    mc_dropout_logits,
    mc_softmax,
    mc_summary,
    predict_logits,
    softmax_t,
)
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.models.store import load_model
from hemalens.engine.project import Project
from hemalens.engine.review import write_predictions
from hemalens.engine.review.ood_detector import OODDetector
from hemalens.engine.scaleout import IN_PROCESS, Cluster, open_executor
from hemalens.engine.workflows.calibration import ood_scores

#: The measure whose class and confidence a person sees: the MC-dropout mean, temperature
#: scaled on the validation split (best calibrated in our evaluations and the paper's).
DEFAULT_MEASURE = "mc_mean_ts"
#: Cells per task. The MC-dropout masks of a chunk are seeded with ``seed + start``, so
#: the chunk size is part of what a seed means; 1024 gives two workers work from 2k cells.
CHUNK = 1024


def _cached_model(project_path: str, name: str, created: str) -> tuple[Any, dict[str, Any]]:
    """Return the model, loaded once per process (again when the model is replaced)."""
    key = (project_path, name, created)
    if key not in _MODELS:
        _MODELS.clear()  # one model at a time: a long-lived worker keeps no stale weights
        _MODELS[key] = load_model(project_path, name)
    return _MODELS[key]


_MODELS: dict[tuple[str, str, str], tuple[Any, dict[str, Any]]] = {}
#: The project held open by an in-process :func:`predict_project` for its chunks (opening
#: a 100k-cell project per chunk cost ~45 ms, 4 s per predict); workers open their own.
_OPEN: dict[str, Project] = {}


def _chunk_images(project_path: str, start: int, stop: int) -> np.ndarray:
    project = _OPEN.get(project_path)
    if project is not None:
        return project.images(np.arange(start, stop))
    with Project.open(project_path) as opened:
        return opened.images(np.arange(start, stop))


def predict_chunk(
    project_path: str, name: str, created: str, start: int, stop: int, passes: int,
    seed: int, measure: str,
) -> dict[str, np.ndarray]:
    """Predict cells ``start..stop-1`` of a project: the columns of its predictions file.

    The unit of work of :func:`predict_project`, in-process or on a Dask worker: it reads
    the model and the images itself, so only the columns travel back. The dropout masks
    are seeded with ``seed + start``: the result depends on the chunk, not on where it ran.

    Parameters
    ----------
    project_path : str
        The project (readable by the worker at this path).
    name, created : str
        The model and its creation time (a replaced model is loaded afresh).
    start, stop : int
        Cell rows.
    passes, seed, measure
        As for :func:`predict_project`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``predicted``, ``confidence``, ``probs``, ``mc_mean``, ``mc_median``, ``mc_std``,
        ``conf_<measure>``, and ``ood_score``/``ood`` when the model has an OOD detector.
    """
    model, meta = _cached_model(project_path, name, created)
    calibration = meta["extra"].get("calibration") or {}
    std_map = StdConfidence.from_dict(calibration["std_map"]) if "std_map" in calibration else None
    images = _chunk_images(project_path, start, stop)
    logits = predict_logits(model, images)
    mc_logits = mc_dropout_logits(model, images, passes=passes, seed=seed + start)
    probs = mc_softmax(mc_logits)
    summary = mc_summary(probs)
    measures = confidence_measures(
        logits,
        summary,
        temperature=calibration.get("temperature"),
        mc_temperature=calibration.get("mc_temperature"),
        std_map=std_map,
        mc_logits=mc_logits,
    )
    if measure not in measures:
        raise ValueError(f"unknown or unavailable measure {measure!r}; "
                         f"available: {', '.join(measures)}")
    freq = softmax_t(logits, calibration.get("temperature") or 1.0)
    chunk = {
        "predicted": measures[measure]["pred"].astype(np.int16),
        "confidence": measures[measure]["confidence"].astype(np.float32),
        "probs": freq.astype(np.float32),
        "mc_mean": summary["mean"].astype(np.float32),
        "mc_median": summary["median"].astype(np.float32),
        "mc_std": summary["std"].astype(np.float32),
    }
    for key, m in measures.items():
        chunk[f"conf_{key}"] = m["confidence"].astype(np.float32)
    detector = OODDetector.from_model(meta)
    if detector is not None:
        score = ood_scores(model, detector, images, measures)
        chunk["ood_score"] = score.astype(np.float32)
        chunk["ood"] = detector.flag(score)
    return chunk


def predict_project(
    project_path: str | Path,
    *,
    model_name: str | None = None,
    passes: int = 100,
    measure: str = DEFAULT_MEASURE,
    seed: int = 0,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """Predict every object of a project with a stored model and save the predictions.

    With a model that carries an out-of-distribution detector (every model trained since
    issue 13) the predictions get ``ood_score`` and the ``ood`` flag
    (``ood_score > threshold``, the threshold keeping 95 % of validation cells).

    Parameters
    ----------
    project_path : str or Path
        The project; it must hold a trained model.
    model_name : str, optional
        Which model; the active one when omitted.
    passes : int
        MC-dropout passes per cell (paper: 100).
    measure : str
        Confidence measure behind ``predicted``/``confidence`` (see
        :func:`~hemalens.engine.calibrate.confidence_measures`).
    seed : int
        Seed of the dropout masks (predictions are reproducible).
    progress : Progress, optional
        Progress over cells; cancelling writes nothing.
    cluster : Cluster, optional
        Where the chunks run (:mod:`hemalens.engine.scaleout`); default in-process.
        Every executor gives identical predictions.
    chunk : int
        Cells per task; part of what the seed means (keep it to reproduce a run).

    Returns
    -------
    dict
        ``{"model", "cells", "passes", "measure", "seconds", "cells_per_s",
        "predicted": {class: n}, "ood": n flagged (None without a detector), "executor"}``.
    """
    t0 = time.perf_counter()
    # reach the cluster first: an unreachable scheduler fails before any work
    with open_executor(cluster) as executor:
        model, meta = load_model(project_path, model_name)
        calibration = meta["extra"].get("calibration") or {}
        detector = OODDetector.from_model(meta)
        project = Project.open(project_path)
        n = project.n_cells
        path = str(Path(project.paths.root).resolve())  # workers open it by this path
        if n == 0:
            project.close()
            raise ProjectError(project_path, "has no cells to predict")
        classes = list(meta["class_names"])
        name, created = meta["name"], str(meta["created"])
        _MODELS.clear()  # in-process chunks use this copy; workers load their own
        _MODELS[(path, name, created)] = (model, meta)
        tasks = [(path, name, created, start, min(n, start + chunk), passes, seed, measure)
                 for start in range(0, n, chunk)]
        parts: dict[str, list[np.ndarray]] = {}
        if progress is not None:
            progress.set_status(f"predicting {n} cells ({executor.cluster.describe()})")
        _OPEN[path] = project
        try:
            for (_, _, _, _, stop, *_), columns in zip(
                    tasks, executor.map(predict_chunk, tasks, progress=progress), strict=True):
                for key, value in columns.items():
                    parts.setdefault(key, []).append(value)
                if progress is not None:
                    progress.set_progress(stop, n)
        finally:
            _OPEN.pop(path, None)
            project.close()
        checkpoint(progress)
        columns = {key: np.concatenate(values) for key, values in parts.items()}
        write_predictions(project_path, name, columns, {
            "model": name,
            "measure": measure,
            "passes": passes,
            "seed": seed,
            "chunk": chunk,
            "temperature": calibration.get("temperature"),
            "mc_temperature": calibration.get("mc_temperature"),
            "class_names": classes,
            "ood_threshold": None if detector is None else detector.threshold,
        })
        seconds = time.perf_counter() - t0
        counts = np.bincount(columns["predicted"], minlength=len(classes))
        return {
            "model": name,
            "cells": n,
            "passes": passes,
            "measure": measure,
            "seconds": round(seconds, 3),
            "cells_per_s": round(n / seconds, 1),
            "predicted": {c: int(k) for c, k in zip(classes, counts, strict=True)},
            "ood": int(columns["ood"].sum()) if "ood" in columns else None,
            "executor": (cluster or IN_PROCESS).describe(),
        }
