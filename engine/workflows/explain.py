"""``hemalens explain``: per-cell explanation maps into the project, and meta-explanations.

Maps are computed for the class a person sees (the stored calibrated prediction when the
model has predictions, else the model's own arg-max in eval mode), cached in the project
per model and method (:mod:`hemalens.engine.explain.store`) and recomputed only when the
model changes or ``force`` is given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.explain.meta import aggregate_by_confidence, cluster_explanations
from hemalens.engine.explain.methods import METHODS, explain_cells
from hemalens.engine.explain.render import cluster_png, meta_grid_png, overlay_png
from hemalens.engine.explain.store import cached_cells, read_explanations, write_explanations
from hemalens.engine.jobs import Progress, SubProgress, checkpoint
from hemalens.engine.models.store import load_model
from hemalens.engine.project import Project
from hemalens.engine.project.model_index import model_info
from hemalens.engine.review import read_predictions
from hemalens.engine.scaleout import Cluster, open_executor

__all__ = ["explain_meta", "explain_project", "select_cells"]

#: Cells explained per task and per save (an append-only segment of the cache): small
#: enough that two workers share a review queue and a cancel loses little (LIME: ~0.1 s
#: per cell), large enough that saves stay rare; a cancelled job keeps every finished chunk.
CHUNK = 128
#: Work between two saves, seconds: a kill loses at most about this much. The first chunk
#: (:data:`PROBE`) cells measures the per-cell cost; later chunks hold what fits in this
#: time, at most ``chunk`` cells (a slow model on a slow machine saves more often).
SAVE_EVERY_S = 30.0
PROBE = 16


def chunk_sizes(n: int, per_cell_s: float, cap: int, *, every_s: float = SAVE_EVERY_S,
                floor: int = 4) -> list[int]:
    """Split ``n`` cells into chunks of about ``every_s`` seconds of work each.

    Parameters
    ----------
    n : int
        Cells left.
    per_cell_s : float
        Measured seconds per cell (where it ran).
    cap : int
        Most cells per chunk.
    every_s : float
        Target seconds per chunk.
    floor : int
        Fewest cells per chunk (saves stay cheap against the work).

    Returns
    -------
    list of int
        Chunk sizes summing to ``n``.
    """
    size = cap if per_cell_s <= 0 else int(every_s / per_cell_s)
    size = max(min(size, cap), min(floor, cap), 1)
    return [min(size, n - k) for k in range(0, n, size)]

_MODELS: dict[tuple[str, str, str], tuple[Any, dict[str, Any]]] = {}


def _cached_model(project_path: str, name: str, created: str) -> tuple[Any, dict[str, Any]]:
    """Return the model, loaded once per process (again when the model is replaced)."""
    key = (project_path, name, created)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(project_path, name)
    return _MODELS[key]


def explain_chunk(
    project_path: str, name: str, created: str, method: str, ids: np.ndarray,
    targets: np.ndarray | None, seed: int, mc_passes: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Explain one chunk of cells: the unit of work of :func:`explain_project`.

    Runs in-process or on a Dask worker; it reads the model and the patches itself and
    returns the maps (the driver writes them). A cell's map depends on its patch, target
    and seed only, not on where it ran.

    Parameters
    ----------
    project_path : str
        The project (readable at this path where the chunk runs).
    name, created : str
        The model and its creation time.
    method : str
        Explanation method.
    ids : numpy.ndarray
        Cell ids.
    targets : numpy.ndarray or None
        Class per cell (None: the model's eval-mode prediction).
    seed, mc_passes
        As for :func:`explain_project`.
    progress : Progress, optional
        Cancellation only.

    Returns
    -------
    (maps, targets, seconds)
    """
    import torch

    model, _ = _cached_model(project_path, name, created)
    with Project.open(project_path) as project:
        patches = project.images(ids)
    probs_fn = _mc_mean_probs(model, mc_passes, seed) if mc_passes else None
    # Gradients summed by several threads differ in the last bits from one thread's (a Dask
    # worker has one): one thread everywhere keeps the maps bit-identical. LIME only runs
    # forward passes, which agree across thread counts.
    threads = torch.get_num_threads()
    if method != "lime":
        torch.set_num_threads(1)
    try:
        result = explain_cells(model, patches, method, targets=targets, seed=seed,
                               probs_fn=probs_fn, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return result.maps, result.targets, result.seconds


def _model_codes(project: Project, classes: Sequence[str]) -> np.ndarray:
    """Given labels as codes into the model's classes (-1: unlabelled or unknown class)."""
    to_model = np.asarray([list(classes).index(c) if c in classes else -1
                           for c in project.classes] + [-1], dtype=np.int64)
    return to_model[np.asarray(project.cells["given_label"], np.int64)]


def _mc_mean_probs(model: Any, passes: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """LIME classifier function: mean class probabilities of ``passes`` MC-dropout passes."""
    from hemalens.engine.calibrate import mc_dropout_probs

    def probs(patches: np.ndarray) -> np.ndarray:
        return mc_dropout_probs(model, patches, passes=passes, seed=seed).mean(axis=0)

    return probs


def _write_pngs(project_path: str | Path, model: str, method: str, created: str,
                settings: dict[str, Any], ids: np.ndarray, classes: list[str],
                out: Path) -> list[str]:
    """One overlay PNG per cell from the cache (the maps just computed or found there)."""
    maps, targets, _ = read_explanations(project_path, model, method, ids,
                                         model_created=created, settings=settings)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with Project.open(project_path) as project:
        for cell, m, t in zip(ids, maps, targets, strict=True):
            path = out / f"cell_{int(cell)}_{method}.png"
            overlay_png(project.image(int(cell)), m, path,
                        title=f"cell {int(cell)}: {method}, class {classes[int(t)]}")
            files.append(str(path))
    return files


def select_cells(
    project_path: str | Path, cells: str | Sequence[int], *, model_name: str | None = None
) -> np.ndarray:
    """Resolve a cell selection to sorted cell ids.

    Parameters
    ----------
    project_path : str or Path
        The project.
    cells : str or sequence of int
        ``"all"`` (every QC-passed cell), ``"queue"`` (the mislabel queue of the model's
        predictions) or explicit cell ids.
    model_name : str, optional
        Whose predictions define the queue; default the active model.

    Returns
    -------
    numpy.ndarray
        int64 cell ids.

    Raises
    ------
    ProjectError
        Unknown ids, or ``"queue"`` without predictions.
    """
    with Project.open(project_path) as project:
        n = len(project.cells["cell_id"])
        qc = np.asarray(project.cells["qc_pass"], bool)
    if isinstance(cells, str):
        if cells == "all":
            return np.flatnonzero(qc).astype(np.int64)
        if cells == "queue":
            from hemalens.engine.workflows.review import review_project

            review = review_project(project_path, model_name=model_name, with_ood=False)
            return np.asarray(sorted(r["cell_id"] for r in review["queue"]), np.int64)
        raise ProjectError(project_path, f"unknown cell selection {cells!r} "
                           "(use all, queue or a list of ids)")
    ids = np.unique(np.asarray(list(cells), dtype=np.int64))
    bad = ids[(ids < 0) | (ids >= n)]
    if bad.size:
        raise ProjectError(project_path, f"no cell with id {int(bad[0])} "
                           f"(the project has {n} cells)")
    return ids


def explain_project(
    project_path: str | Path,
    method: str,
    *,
    cells: str | Sequence[int] = "all",
    model_name: str | None = None,
    seed: int = 0,
    mc_passes: int = 0,
    target: str | None = None,
    png_dir: str | Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """Compute and store explanation maps for cells of a project.

    Parameters
    ----------
    project_path : str or Path
        A project with a trained model.
    method : str
        One of :data:`~hemalens.engine.explain.methods.METHODS`.
    cells : str or sequence of int
        See :func:`select_cells`.
    model_name : str, optional
        Default the active model.
    seed : int
        Seed of the stochastic methods (LIME's perturbations).
    mc_passes : int
        LIME only: explain the mean of this many MC-dropout passes (the variational
        prediction) instead of the eval-mode softmax; 0 (default) uses the softmax. The cache holds
        one kind at a time: switching recomputes.
    target : str, optional
        Explain this class (a name of the model's classes) for every cell instead of the
        shown prediction.
    png_dir : str or Path, optional
        Also write each selected cell's overlay (positive blue, negative red, colour bar)
        as ``cell_<id>_<method>.png`` there.
    force : bool
        Recompute cells whose maps are cached.
    progress : Progress, optional
        Progress over cells; cancelling keeps every chunk already saved.
    cluster : Cluster, optional
        Where the chunks run (:mod:`hemalens.engine.scaleout`); default in-process. The
        maps are identical whichever runs them; only this process writes the project.
    chunk : int
        Most cells per task and per save; fewer when they would take more than
        :data:`SAVE_EVERY_S` seconds (a kill loses at most about that much work).

    Returns
    -------
    dict
        ``{"method", "model", "cells", "computed", "cached", "seconds", "per_cell_ms"}``;
        ``per_cell_ms`` is the compute time per computed cell (NaN when all were cached).

    Raises
    ------
    ProjectError
        No model, bad selection.
    ValueError
        Unknown method, or one that does not apply to the model (e.g. Grad-CAM on LeNet5).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if mc_passes < 0 or (mc_passes and method != "lime"):
        raise ValueError(f"MC-dropout passes apply to LIME only (got {mc_passes} for {method})")
    t0 = time.perf_counter()
    # reach the cluster first: an unreachable scheduler fails before any work
    with open_executor(cluster) as executor:
        model, meta = load_model(project_path, model_name)
        name, created = meta["name"], str(meta["created"])
        ids = select_cells(project_path, cells, model_name=name)
        settings: dict[str, Any] = {"seed": seed}
        if mc_passes:
            settings["mc_passes"] = mc_passes
        classes = list(meta["class_names"])
        if target is not None:
            if target not in classes:
                raise ValueError(f"unknown class {target!r}; the model's classes are "
                                 f"{', '.join(classes)}")
            settings["target"] = target
            n_cells = int(ids.max()) + 1 if len(ids) else 0
            targets_all: np.ndarray | None = np.full(n_cells, classes.index(target), np.int64)
        else:
            found = read_predictions(project_path, name)
            targets_all = found[0]["predicted"].astype(np.int64) if found is not None else None
        cached = cached_cells(project_path, name, method, created, settings=settings)
        todo = ids if force else np.setdiff1d(ids, cached)
        with Project.open(project_path) as project:
            path = str(Path(project.paths.root).resolve())  # workers open it by this path
        _MODELS.clear()  # in-process chunks use this copy; workers load their own
        _MODELS[(path, name, created)] = (model, meta)

        def task(ids_chunk: np.ndarray) -> tuple:
            targets = None
            if targets_all is not None and np.all(targets_all[ids_chunk] >= 0):
                targets = targets_all[ids_chunk]
            return (path, name, created, method, ids_chunk, targets, seed, mc_passes)

        compute_s = 0.0
        done = 0
        if progress is not None:
            progress.set_status(f"{method}: explaining {len(todo)} cell(s) "
                                f"({executor.cluster.describe()})")
            progress.set_progress(0, len(todo))

        def run(tasks: list[tuple]) -> float:
            nonlocal compute_s, done
            seconds_here = 0.0
            for t, (maps, targets, seconds) in zip(
                    tasks, executor.map(explain_chunk, tasks, progress=progress,
                                        pass_cancel=True), strict=True):
                compute_s += seconds
                seconds_here += seconds
                write_explanations(project_path, name, method, t[4], maps, targets,
                                   model_created=created, settings=settings)
                done += len(t[4])
                if progress is not None:
                    progress.set_progress(done, len(todo))
            return seconds_here

        # A small first chunk measures the cost per cell; the rest are sized so that a save
        # follows every SAVE_EVERY_S seconds of work (at most `chunk` cells).
        probe = todo[:min(PROBE, chunk, len(todo))]
        per_cell = run([task(probe)]) / len(probe) if len(probe) else 0.0
        rest = todo[len(probe):]
        tasks, start = [], 0
        for size in chunk_sizes(len(rest), per_cell, chunk, every_s=SAVE_EVERY_S):
            tasks.append(task(rest[start:start + size]))
            start += size
        run(tasks)
        files: list[str] = []
        if png_dir is not None:
            files = _write_pngs(project_path, name, method, created, settings, ids, classes,
                                Path(png_dir))
        return {
            "method": method,
            "model": name,
            "target": target or "predicted",
            "files": files,
            "cells": int(len(ids)),
            "computed": int(len(todo)),
            "cached": int(len(ids) - len(todo)),
            "seconds": round(time.perf_counter() - t0, 3),
            "per_cell_ms": round(1000 * compute_s / len(todo), 3) if len(todo) else float("nan"),
        }


def explain_meta(
    project_path: str | Path,
    out_dir: str | Path,
    *,
    method: str = "lime",
    model_name: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
) -> dict[str, Any]:
    """Meta-explanations (paper 1, §4.4): aggregation by label x confidence, clustering.

    Maps missing from the cache are computed first for every QC-passed labelled cell.

    Parameters
    ----------
    project_path : str or Path
        A project with a trained model and its predictions (``hemalens predict``), whose
        calibrated confidence places each cell in one of six confidence bins.
    out_dir : str or Path
        Where ``meta_grid.png``, ``clusters.png`` and ``meta.json`` go.
    method, model_name, seed, progress, cluster
        As for :func:`explain_project`.

    Returns
    -------
    dict
        ``{"method", "model", "cells", "bins": [...], "clusters": [{"id", "size",
        "composition"}], "files": [...], "seconds"}``.

    Raises
    ------
    ProjectError
        No predictions, or fewer than 4 labelled cells.
    """
    t0 = time.perf_counter()
    info = model_info(project_path, model_name)  # names only: explain_project loads it
    name, created, classes = info["name"], info["created"], info["class_names"]
    found = read_predictions(project_path, name)
    if found is None:
        raise ProjectError(project_path, "has no predictions: run `hemalens predict` first")
    with Project.open(project_path) as project:
        given = _model_codes(project, classes)
        qc = np.asarray(project.cells["qc_pass"], bool)
    ids = np.flatnonzero(qc & (given >= 0)).astype(np.int64)
    if len(ids) < 4:
        raise ProjectError(project_path, f"has {len(ids)} labelled QC-passed cells; "
                           "meta-explanations need at least 4")
    explain_project(project_path, method, cells=ids.tolist(), model_name=name, seed=seed,
                    progress=SubProgress(progress, 0.0, 0.8, "explaining"), cluster=cluster)
    checkpoint(progress)
    maps, _, computed = read_explanations(project_path, name, method, ids, model_created=created,
                                          settings={"seed": seed})
    if not computed.all():
        raise ProjectError(project_path, f"{int((~computed).sum())} {method} maps are missing")
    confidence = found[0]["confidence"][ids]
    # Bins over [1/K, 1]: a max-probability confidence is never below 1/K, so bins from 0
    # would leave the first column empty.
    grid = aggregate_by_confidence(maps, given[ids], confidence, len(classes),
                                   lower=1.0 / len(classes))
    clusters = cluster_explanations(maps, given[ids], len(classes), seed=seed,
                                    class_names=classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [meta_grid_png(grid, classes, out / "meta_grid.png"),
             cluster_png(clusters, classes, out / "clusters.png")]
    result: dict[str, Any] = {
        "method": method,
        "model": name,
        "cells": int(len(ids)),
        "bins": grid.to_json(classes),
        "clusters": clusters.clusters,
        "files": [str(p) for p in files],
    }
    (out / "meta.json").write_text(json.dumps(result, indent=1))
    result["files"].append(str(out / "meta.json"))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
