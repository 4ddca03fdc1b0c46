"""What the embedding view shows and does, without Qt.

The GUI's embedding view (``gui/embedding_view.py``) draws a 2-D map of the cells. A map
comes from one of two sources:

- an *embedding model* (``hemalens embed train``): its stored openTSNE ``/projection``;
- the *active classifier's features* (QPI projects, which have no embedding network): the
  classifier's penultimate-layer activations of every QC-passed cell, mapped with
  openTSNE and stored as ``derived/maps/<classifier>.h5``::

      /projection  float32 (N_cells, 2), NaN rows for cells not mapped
      attrs        format ("hemalens-feature-map"), model, model_created, created,
                   n_features, hemalens_version

  The file is keyed by the classifier and remembers when that classifier was created, so
  a new (or retrained) classifier invalidates it (:func:`read_feature_map` returns None).

This module also holds the view's vectorised helpers: the lasso test
(:func:`points_in_polygon`), the PLI targets file of a map (:func:`pli_path`), the
step-by-step ALI/PALI preview (:func:`intervention_preview`), the neighbourhood change
between two embeddings (:func:`neighbourhood_changed`) and the active embedding model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine import __version__
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, checkpoint, report

__all__ = [
    "FEATURE_MAP_FORMAT",
    "MapPoints",
    "active_embedding",
    "compute_feature_map",
    "embedding_runs",
    "intervention_preview",
    "load_map",
    "map_sources",
    "neighbourhood_changed",
    "pli_path",
    "points_in_polygon",
    "read_feature_map",
    "set_active_embedding",
]

FEATURE_MAP_FORMAT = "hemalens-feature-map"
#: The annotation-store setting naming the embedding model the view shows.
ACTIVE_EMBEDDING_SETTING = "active_embedding"
_BATCH = 512


@dataclass
class MapPoints:
    """The cells of one 2-D map.

    Attributes
    ----------
    key : str
        ``"embedding:<name>"`` or ``"features:<classifier>"``.
    ids : numpy.ndarray
        ``(M,)`` int64 cell ids with a finite map position.
    xy : numpy.ndarray
        ``(M, 2)`` float64 positions.
    fold : numpy.ndarray
        ``(M,)`` int8 cross-validation fold that tested each cell (-1: none).
    meta : dict
        ``name``, ``kind`` and, for embedding models, ``metrics`` and ``config``.
    """

    key: str
    ids: np.ndarray
    xy: np.ndarray
    fold: np.ndarray
    meta: dict[str, Any]


def _paths(project: Any) -> Any:
    from hemalens.engine.project.store import locate_project

    return locate_project(project)


# -- embedding runs (read with h5py alone: no torch on the GUI thread) -------------------
def embedding_runs(project: Any) -> list[dict[str, Any]]:
    """List the embedding models the view offers, oldest first (damaged ones left out).

    See :func:`~hemalens.engine.embed.index.list_embedding_models` for the keys.
    """
    from hemalens.engine.embed.index import list_embedding_models

    return list_embedding_models(_paths(project).root, skip_damaged=True)


# -- the active embedding ---------------------------------------------------------------
def active_embedding(project: Any) -> str | None:
    """Return the embedding model the view shows: the chosen one, else the newest.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.

    Returns
    -------
    str or None
        A model name, or None when the project has no embedding model.
    """
    from hemalens.engine.project.annotations import AnnotationStore

    paths = _paths(project)
    rows = embedding_runs(paths.root)
    if not rows:
        return None
    with AnnotationStore.settings_only(paths.annotations) as store:
        chosen = store.setting(ACTIVE_EMBEDDING_SETTING)
    names = [r["name"] for r in rows]
    return chosen if chosen in names else names[-1]


def set_active_embedding(project: Any, name: str | None) -> None:
    """Make ``name`` the embedding model the view shows (None: the newest).

    Raises
    ------
    ProjectError
        No embedding model of that name.
    """
    from hemalens.engine.project.annotations import AnnotationStore

    paths = _paths(project)
    if name is not None and name not in {r["name"] for r in embedding_runs(paths.root)}:
        raise ProjectError(paths.root, f"no embedding model {name!r}")
    with AnnotationStore.settings_only(paths.annotations) as store:
        store.set_setting(ACTIVE_EMBEDDING_SETTING, name)


# -- map sources --------------------------------------------------------------------------
def map_sources(project: Any) -> list[dict[str, Any]]:
    """List the maps the view can show, the active embedding first.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.

    Returns
    -------
    list of dict
        ``key``, ``kind`` (``embedding`` or ``features``), ``name``, ``label``,
        ``ready`` (False: the classifier's feature map must be computed first),
        ``active`` (the active embedding model), and for
        embedding models ``mean_f1``, ``loss``, ``types``, ``created``.
    """
    from hemalens.engine.project.model_index import active_model

    paths = _paths(project)
    out: list[dict[str, Any]] = []
    act = active_embedding(paths.root)
    for r in reversed(embedding_runs(paths.root)):
        f1 = r.get("mean_f1")
        score = f" · test F1 {f1:.3f}" if isinstance(f1, (int, float)) else ""
        out.append({"key": f"embedding:{r['name']}", "kind": "embedding", "name": r["name"],
                    "label": f"{'● ' if r['name'] == act else ''}{r['name']}{score}",
                    "ready": True, "active": r["name"] == act,
                    **{k: r.get(k) for k in ("mean_f1", "loss", "types", "created")}})
    out.sort(key=lambda s: s["name"] != act)
    clf = active_model(paths)
    if clf is not None:
        ready = read_feature_map(paths.root, clf) is not None
        out.append({"key": f"features:{clf}", "kind": "features", "name": clf,
                    "label": f"Classifier features · {clf}" + ("" if ready else
                                                               " (not computed)"),
                    "ready": ready, "active": False})
    return out


def load_map(project: Any, key: str) -> MapPoints:
    """Read the cells of one map (see :func:`map_sources`).

    Raises
    ------
    ProjectError
        No such map, a stale or missing feature map, or a damaged file.
    """
    from hemalens.engine.project.derived import read_item
    from hemalens.engine.project.store import attr_json

    paths = _paths(project)
    kind, _, name = key.partition(":")
    if kind == "embedding":
        with read_item(paths, "embeddings", name) as g:
            if g is None or "projection" not in g:
                raise ProjectError(paths.root, f"embedding model {name!r} has no stored map")
            proj = np.asarray(g["projection"][()], np.float64)
            fold = np.asarray(g["fold"][()], np.int8) if "fold" in g else \
                np.full(len(proj), -1, np.int8)
            meta = {"name": name, "kind": kind,
                    "metrics": attr_json(g.attrs, "metrics_json", {}) or {},
                    "config": attr_json(g.attrs, "config_json", {}) or {}}
    elif kind == "features":
        found = read_feature_map(paths.root, name)
        if found is None:
            raise ProjectError(paths.root, f"the feature map of classifier {name!r} is not "
                                           "computed (or its classifier changed)")
        proj = np.asarray(found, np.float64)
        fold = np.full(len(proj), -1, np.int8)
        meta = {"name": name, "kind": kind}
    else:
        raise ValueError(f"unknown map {key!r}")
    ids = np.flatnonzero(np.isfinite(proj).all(axis=1)).astype(np.int64)
    return MapPoints(key, ids, proj[ids], fold[ids], meta)


# -- the classifier's feature map (QPI) ------------------------------------------------
def _model_created(paths: Any, model: str) -> str:
    from hemalens.engine.project.derived import read_item

    with read_item(paths, "models", model) as f:
        if f is None:
            raise ProjectError(paths.root, f"no classifier {model!r}")
        return str(f.attrs.get("created", ""))


def read_feature_map(project: Any, model: str) -> np.ndarray | None:
    """Return the stored feature map of a classifier, or None when missing or stale.

    Stale means the classifier was replaced (its creation time differs from the one the
    map was computed for) or deleted.

    Returns
    -------
    numpy.ndarray or None
        ``(N_cells, 2)`` float64 (NaN rows for cells not mapped).
    """
    from hemalens.engine.project.derived import read_item

    paths = _paths(project)
    try:
        created = _model_created(paths, model)
    except ProjectError:
        return None
    with read_item(paths, "maps", model) as g:
        if g is None or g.attrs.get("format") != FEATURE_MAP_FORMAT:
            return None
        if str(g.attrs.get("model_created", "")) != created or "projection" not in g:
            return None
        return np.asarray(g["projection"][()], np.float64)


def penultimate_features(model: Any, patches: np.ndarray) -> np.ndarray:
    """Return the activations of the classifier's last hidden layer (eval mode, no dropout).

    Parameters
    ----------
    model : Classifier
        A HemaLens classifier (``trunk`` then the ``classifier`` head).
    patches : numpy.ndarray
        ``(N, H, W)`` normalised patches.

    Returns
    -------
    numpy.ndarray
        ``(N, F)`` float32.
    """
    import torch

    model.eval()
    hidden = model.classifier[:-1]  # the head without its output layer
    out = []
    with torch.no_grad():
        for start in range(0, len(patches), _BATCH):
            x = model.preprocess(patches[start:start + _BATCH])
            out.append(hidden(model.trunk(x)).cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def compute_feature_map(project_path: str | PathLike[str], model: str | None = None, *,
                        seed: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """Map the classifier's penultimate features of every QC-passed cell with openTSNE.

    The result is stored as ``derived/maps/<model>.h5`` (written whole, then renamed);
    a cancelled run writes nothing.

    Parameters
    ----------
    project_path : str or PathLike
        The project.
    model : str, optional
        The classifier; default the active one.
    seed : int
        openTSNE's random state.
    progress : Progress, optional
        Progress and cancel.

    Returns
    -------
    dict
        ``model``, ``cells`` (mapped), ``n_features``.

    Raises
    ------
    ProjectError
        No classifier, or fewer than 4 QC-passed cells.
    """
    from hemalens.engine.embed.projection import tsne_map
    from hemalens.engine.models.store import load_model
    from hemalens.engine.project.derived import write_item
    from hemalens.engine.project.store import Project, iso_utc

    paths = _paths(project_path)
    net, meta = load_model(paths.root, model)
    name = meta["name"]
    created = _model_created(paths, name)
    with Project.open(paths.root) as p:
        ids = np.flatnonzero(np.asarray(p.cells["qc_pass"], bool))
        n_cells = p.n_cells
        if ids.size < 4:
            raise ProjectError(paths.root, f"has {ids.size} QC-passed cells; a map needs 4")
        feats = []
        for k, start in enumerate(range(0, ids.size, 4 * _BATCH)):
            checkpoint(progress)
            chunk = ids[start:start + 4 * _BATCH]
            feats.append(penultimate_features(net, p.images(chunk)))
            if progress is not None:
                progress.set_status(f"Features of {min(ids.size, start + chunk.size):,} of "
                                    f"{ids.size:,} cells")
                progress.set_progress(int(500 * (k + 1) * 4 * _BATCH / ids.size), 1000)
    X = np.concatenate(feats)
    checkpoint(progress)
    if progress is not None:
        progress.set_status(f"2-D map of {ids.size:,} cells (openTSNE)")
        progress.set_progress(500, 1000)
    points = tsne_map(X, seed=seed).points
    checkpoint(progress)
    proj = np.full((n_cells, 2), np.nan, np.float32)
    proj[ids] = points

    def write(g: Any) -> None:
        g.create_dataset("projection", data=proj)
        g.attrs.update({"format": FEATURE_MAP_FORMAT, "model": name, "model_created": created,
                        "created": iso_utc(), "n_features": int(X.shape[1]),
                        "hemalens_version": __version__})

    write_item(paths, "maps", name, write)
    if progress is not None:
        progress.set_progress(1000, 1000)
    return {"model": name, "cells": int(ids.size), "n_features": int(X.shape[1])}


def pli_path(project: Any, key: str) -> Path:
    """Return the PLI targets file of a map (beside the map's file in ``derived/``).

    Parameters
    ----------
    project : str, PathLike or Project
        The project.
    key : str
        The map (see :func:`map_sources`).

    Returns
    -------
    Path
        ``derived/embeddings/<name>.pli.json`` or ``derived/maps/<name>.pli.json``.
    """
    from hemalens.engine.project.bundle import item_filename

    paths = _paths(project)
    kind, _, name = key.partition(":")
    folder = paths.kind_dir("embeddings" if kind == "embedding" else "maps")
    return folder / (item_filename(name) + ".pli.json")


# -- vectorised helpers ----------------------------------------------------------------------
def points_in_polygon(xy: np.ndarray,
                      polygon: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Return the indices of the points inside a closed polygon (the lasso).

    A vectorised bounding-box pre-filter leaves ``matplotlib.path.Path.contains_points``
    only the points that can be inside (1M points: tens of milliseconds).

    Parameters
    ----------
    xy : numpy.ndarray
        ``(M, 2)`` points.
    polygon : array-like
        ``(V, 2)`` vertices (V >= 3; closed implicitly).

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices into ``xy``.
    """
    from matplotlib.path import Path as MplPath

    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(poly) < 3 or len(xy) == 0:
        return np.zeros(0, np.int64)
    (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
    x, y = xy[:, 0], xy[:, 1]
    cand = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    if cand.size == 0:
        return np.zeros(0, np.int64)
    hit = MplPath(np.vstack([poly, poly[:1]]), closed=True).contains_points(xy[cand])
    return cand[hit].astype(np.int64)


def neighbourhood_changed(before: np.ndarray, after: np.ndarray, k: int = 10,
                          keep: float = 0.5) -> np.ndarray:
    """Which cells changed neighbourhood between two embeddings of the same cells.

    A cell changed when fewer than ``keep`` of its ``k`` nearest neighbours before are
    still among its ``k`` nearest neighbours after.

    Parameters
    ----------
    before, after : numpy.ndarray
        ``(M, d1)`` and ``(M, d2)`` positions of the same M cells (any dimensions).
    k : int
        Neighbours per cell.
    keep : float
        Share of neighbours that must stay.

    Returns
    -------
    numpy.ndarray
        ``(M,)`` bool.
    """
    from sklearn.neighbors import NearestNeighbors

    m = len(before)
    if m != len(after):
        raise ValueError(f"{m} cells before, {len(after)} after")
    if m <= 1:
        return np.zeros(m, bool)
    k = min(k, m - 1)
    a = NearestNeighbors(n_neighbors=k + 1).fit(before).kneighbors(return_distance=False)
    b = NearestNeighbors(n_neighbors=k + 1).fit(after).kneighbors(return_distance=False)
    a, b = a[:, :k], b[:, :k]
    # shared neighbours per row, vectorised: sort both and count matches
    shared = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return shared < keep * k


def intervention_preview(
    xy: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    types: Sequence[str],
    *,
    lambda_c: float = 0.5,
    lambda_s: float = 1.0,
    lambda_r: float = 0.32,
    iterations: int = 20,
    folds: int = 3,
    max_points: int = 3000,
    seed: int = 0,
    renormalise: str = "off",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Apply automatic interventions to a 2-D map step by step (the view's dry run).

    Interventions (:func:`~hemalens.engine.embed.interventions.iter_interventions`) move
    the labelled cells' map positions iteration by iteration; after each iteration an
    RBF-SVM (C and γ chosen once per fold on the untouched map) is fitted on the training
    folds and scored with macro-F1 on the validation fold, averaged over region-aware
    folds (paper 2's dry run, on the 2-D map as PALI sees it). Every iteration is
    reported as ``{"kind": "preview", "iteration", "points", "f1"}`` so a view can
    animate it; cancelling stops it between iterations.

    Parameters
    ----------
    xy : numpy.ndarray
        ``(M, 2)`` map positions of the labelled cells.
    y, groups : numpy.ndarray
        ``(M,)`` class codes 0..K-1 and region codes.
    types : sequence of str
        Intervention types ("c", "s", "os", "r").
    lambda_c, lambda_s, lambda_r : float
        Strengths (see :class:`~hemalens.engine.embed.interventions.InterventionParams`).
    iterations : int
        Interventions to apply.
    folds : int
        Folds of the scoring (>= 3).
    max_points : int
        The SVMs score a seeded random subset of at most this many cells.
    seed : int
        Seeds the folds, the subset and the SVM search.
    renormalise : str
        Shift renormalisation (see ``compute_interventions``); ``"off"`` keeps the moved
        cells in the scale of the rest of the map.
    progress : Progress, optional
        Reports and cancel.

    Returns
    -------
    dict
        ``f1`` (per iteration, iteration 0 first), ``points`` (the final positions),
        ``region_folds`` (False when the cells came from fewer regions than folds and
        the folds split cells instead).
    """
    from hemalens.engine.embed.folds import region_folds
    from hemalens.engine.embed.interventions import InterventionParams, iter_interventions
    from hemalens.engine.embed.svm import fit_svm, macro_f1

    xy = np.asarray(xy, np.float64)
    y = np.asarray(y, np.int64)
    groups = np.asarray(groups)
    params = InterventionParams(types=tuple(types), lambda_c=lambda_c, lambda_s=lambda_s,
                                lambda_r=lambda_r)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(len(y), max_points, replace=False)) if len(y) > max_points \
        else np.arange(len(y))
    by_region = np.unique(groups[sub]).size >= folds
    # too few regions (one slide): cell-wise folds, said so in the result
    splits = region_folds(y[sub], groups[sub] if by_region else np.arange(sub.size), folds,
                          seed=seed)
    svms = []
    for sp in splits:
        tr = sub[np.asarray(sp.train)]
        svms.append(fit_svm(xy[tr], y[tr], grid={"C": (1.0, 10.0), "gamma_factor": (1.0,)},
                            seed=seed).params)

    def score(points: np.ndarray) -> float:
        from sklearn.svm import SVC

        f1s = []
        for sp, prm in zip(splits, svms, strict=True):
            tr, va = sub[np.asarray(sp.train)], sub[np.asarray(sp.val)]
            if va.size == 0:
                continue
            svc = SVC(kernel="rbf", C=prm["C"], gamma=prm["gamma"]).fit(points[tr], y[tr])
            f1s.append(macro_f1(y[va], svc.predict(points[va])))
        return float(np.mean(f1s)) if f1s else float("nan")

    f1 = [score(xy)]
    report(progress, {"kind": "preview", "iteration": 0, "points": xy.astype(np.float32),
                      "f1": f1[0]})
    current = xy
    emb = np.empty_like(xy)
    for st in iter_interventions(xy, y, params, iterations, rng=seed,
                                 renormalise=renormalise):
        checkpoint(progress)
        current = st.embedding(out=emb).copy()
        f1.append(score(current))
        report(progress, {"kind": "preview", "iteration": len(f1) - 1,
                          "points": current.astype(np.float32), "f1": f1[-1]})
        if progress is not None:
            progress.set_progress(len(f1) - 1, iterations)
    return {"f1": f1, "points": current, "region_folds": bool(by_region)}
