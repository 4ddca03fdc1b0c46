"""``hemalens embed train``: train an embedding network on a project and store it with a map.

Reads the QC-passed cells with a current given label (relabels honoured) and their regions,
runs k-fold :func:`~hemalens.engine.embed.training.train_embedding`, embeds every QC-passed
cell (labelled or not) with the final network, maps the embedding to 2-D with openTSNE and
stores network, embedding, map and folds under ``/embeddings/<name>``. The project is only
written at the end, atomically: a cancelled or failed run leaves it as it was.

Grey (phase) projects are accepted: their patches are replicated to three channels, so
every backbone takes them (the ImageNet-shaped first layer then sees equal channels).
"""

from __future__ import annotations

from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.embed.network import EmbeddingSpec
from hemalens.engine.embed.store import cell_regions, save_embedding_model
from hemalens.engine.embed.training import EmbedTrainConfig, train_embedding
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, SubProgress, checkpoint
from hemalens.engine.project import Project

__all__ = ["embed_train_project", "embedding_data", "pli_rows"]

_NON_JSON = ("network", "embedding", "test_fold")


def embedding_data(project: Project) -> dict[str, Any]:
    """Collect what embedding training uses from an open project.

    Parameters
    ----------
    project : Project
        The open project.

    Returns
    -------
    dict
        ``patches`` (``(N, S, S, 3)`` uint8 or ``(N, S, S)`` float32), ``labels`` (int64
        codes into ``class_names``), ``cell_ids`` (int64 rows of the cell table),
        ``groups`` (int64 region codes), ``class_names`` (classes some cell carries),
        ``unlabelled`` (int64 ids of QC-passed cells without a label).

    Raises
    ------
    ProjectError
        No QC-passed labelled cell, or a single class.
    """
    given = np.asarray(project.cells["given_label"], np.int64)
    qc = np.asarray(project.cells["qc_pass"], bool)
    ids = np.flatnonzero(qc & (given >= 0)).astype(np.int64)
    if ids.size == 0:
        reason = "has no cells" if project.n_cells == 0 else "has no QC-passed cell with a label"
        raise ProjectError(project.path, f"{reason}; nothing to train an embedding on")
    used = np.unique(given[ids])
    if used.size < 2:
        raise ProjectError(
            project.path,
            f"all {ids.size} labelled cells are {project.classes[used[0]]!r}; embedding "
            "training needs at least two classes",
        )
    return {
        "patches": project.images(ids),
        "labels": np.searchsorted(used, given[ids]).astype(np.int64),
        "cell_ids": ids,
        "groups": cell_regions(project)[ids],
        "class_names": [str(project.classes[c]) for c in used],
        "unlabelled": np.flatnonzero(qc & (given < 0)).astype(np.int64),
    }


def pli_rows(path: str | PathLike[str], cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Load a PLI session file and align its targets with the training rows.

    Parameters
    ----------
    path : str or PathLike
        A :class:`~hemalens.engine.embed.pli.PLISession` JSON file (``--pli-targets``).
    cell_ids : numpy.ndarray
        Cell id of each training row.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(N, 2)`` float64 targets (NaN for rows not in the session) and ``(N,)`` bool mask
        of the rows the session moved.

    Raises
    ------
    InputError
        The file is missing, corrupt or foreign (one line naming it).
    """
    from hemalens.engine.embed.pli import PLISession

    session = PLISession.load(path)
    targets, mask = session.targets()
    ids = np.asarray(session.cell_ids, np.int64)
    out = np.full((cell_ids.size, 2), np.nan)
    moved = np.zeros(cell_ids.size, bool)
    pos = {int(c): i for i, c in enumerate(ids)}
    for row, cid in enumerate(cell_ids):
        i = pos.get(int(cid))
        if i is not None:
            out[row] = targets[i]
            moved[row] = bool(mask[i])
    return out, moved


def embed_train_project(
    project_path: str | PathLike[str],
    *,
    loss: str = "ali",
    types: tuple[str, ...] | str = ("c", "s"),
    class_weights: bool = False,
    alpha: float | None = None,
    pli_targets: str | PathLike[str] | None = None,
    folds: int = 3,
    epochs: int = 30,
    backbone: str = "small",
    input_size: int = 64,
    seed: int = 0,
    progress: Progress | None = None,
    name: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    lr: float = 1e-3,
    patience: int = 10,
    svm_every: int = 5,
) -> dict[str, Any]:
    """Train an embedding network with k-fold evaluation and store it in the project.

    Parameters
    ----------
    project_path : str or PathLike
        The project.
    loss : {"tml", "ali", "pali"}
        Triplet loss only, TML + ALI, TML + PALI.
    types : tuple of str or str
        Intervention types (``("c", "s")`` or ``"c,s"``).
    class_weights : bool
        Class-weighted intervention term.
    alpha : float, optional
        Intervention weight (default 0.8 ALI, 0.9 PALI/PLI).
    pli_targets : str or PathLike, optional
        A PLI session file whose moved cells join the 2-D term (loss ``pali`` or ``tml``).
    folds : int
        Cross-validation folds (regions never straddle folds).
    epochs : int
        Most epochs per fold.
    backbone : str
        ``"small"``, ``"resnet18"`` or ``"densenet121"`` (random initial weights).
    input_size : int
        Network input side.
    seed : int
        Seed of folds, weights, batches, augmentation, interventions and maps.
    progress : Progress, optional
        Progress over the whole job; cancelling writes nothing.
    name : str, optional
        Stored name; default ``<loss>-<types>-<UTC timestamp>``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    batch_size, lr, patience, svm_every : int, float, int, int
        Optimisation and early stopping (see :class:`EmbedTrainConfig`).

    Returns
    -------
    dict
        JSON-ready: ``model`` (stored name), ``cells`` (training cells), ``embedded``
        (cells with a stored embedding), ``classes`` ({name: count}), ``regions``,
        ``loss``, ``types``, ``alpha``, ``class_weights``, ``config``, ``folds`` (per fold
        ``fold``, ``test_f1``, ``val_f1``, ``epochs``, ``best_epoch``, ``svm``, ``seconds``,
        ``intervention_fraction``), ``mean_f1``, ``std_f1``, ``best_fold``, ``seconds``.

    Raises
    ------
    ProjectError
        Unreadable project, no labels, one class, fewer regions than folds, too few cells
        per fold (one line naming the project).
    ValueError
        Bad arguments (loss, types, backbone, sizes).
    """
    path = Path(project_path)
    cfg = EmbedTrainConfig(
        loss=loss, types=types, alpha=alpha, class_weights=class_weights, epochs=epochs,
        batch_size=batch_size, lr=lr, patience=patience, svm_every=svm_every, seed=seed,
        device=device, spec=EmbeddingSpec(backbone=backbone, input_size=input_size),
    )
    if pli_targets is not None and loss == "ali":
        raise ValueError("PLI targets are 2-D: use --loss pali or tml with them")
    with Project.open(path) as project:
        data = embedding_data(project)
        n_cells = project.n_cells
        rest = project.images(data["unlabelled"]) if data["unlabelled"].size else None
    pli = None if pli_targets is None else pli_rows(pli_targets, data["cell_ids"])
    n_regions = int(np.unique(data["groups"]).size)
    try:
        res = train_embedding(
            data["patches"], data["labels"], data["groups"], cfg, folds=folds,
            pli_targets=pli, progress=SubProgress(progress, 0.0, 0.85),
        )
    except ValueError as err:  # data that cannot be split or trained: the user's to fix
        raise ProjectError(path, str(err).splitlines()[0]) from err
    net = res["network"]
    emb = np.full((n_cells, cfg.spec.dim), np.nan, np.float32)
    emb[data["cell_ids"]] = res["embedding"]
    if rest is not None:
        checkpoint(progress)
        if progress is not None:
            progress.set_status(f"Embedding {len(rest)} unlabelled cells")
        emb[data["unlabelled"]] = net.embed(rest, progress=progress)
    done = np.flatnonzero(np.isfinite(emb).all(axis=1))
    proj = np.full((n_cells, 2), np.nan, np.float32)
    checkpoint(progress)
    if done.size >= 4:
        from hemalens.engine.embed.projection import tsne_map

        if progress is not None:
            progress.set_status(f"2-D map of {done.size} cells (openTSNE)")
            progress.set_progress(900, 1000)
        proj[done] = tsne_map(emb[done], seed=seed).points
    fold = np.full(n_cells, -1, np.int8)
    fold[data["cell_ids"]] = res["test_fold"]
    name = name or f"{loss}-{'+'.join(cfg.types)}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    summary = {k: v for k, v in res.items() if k not in (*_NON_JSON, "history")}
    checkpoint(progress)
    save_embedding_model(
        path, name, net, embedding=emb, projection=proj, fold=fold,
        class_names=data["class_names"],
        config={**cfg.to_dict(), "pli_targets": pli is not None},
        metrics={k: summary[k] for k in ("folds", "mean_f1", "std_f1", "best_fold", "seconds")},
        history=res["history"],
    )
    if progress is not None:
        progress.set_progress(1000, 1000)
    counts = np.bincount(data["labels"], minlength=len(data["class_names"]))
    return {
        "model": name,
        "cells": int(data["labels"].size),
        "embedded": int(done.size),
        "classes": {c: int(k) for c, k in zip(data["class_names"], counts, strict=True)},
        "regions": n_regions,
        **summary,
    }
