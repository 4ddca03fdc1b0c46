"""Embedding networks and their cell embeddings in the project.

Each model is one file, ``derived/embeddings/<name>.h5`` (plain HDF5, readable with h5py
alone; no pickles)::

    /weights/<k>     one dataset per ``state_dict`` entry ``k`` (float32; integer buffers
                     such as BatchNorm counters keep theirs)
    /embedding       float32 (N_cells, dim): every cell of the project, NaN rows for cells
                     not embedded (e.g. failed QC)
    /projection      float32 (N_cells, 2): openTSNE map of the embedded cells (NaN rows
                     likewise)
    /fold            int8 (N_cells,): cross-validation fold that tested the cell, -1 for
                     cells not in the training data
    attrs  format ("hemalens-embedding"), format_version, spec_json (:class:`EmbeddingSpec`),
           config_json, metrics_json, class_names_json, history_json, created (ISO 8601
           UTC), hemalens_version

The file is written whole and renamed into place: an error or an interruption leaves the
project as it was. Writing a name that exists replaces that model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import h5py
import numpy as np

from hemalens.engine import __version__
from hemalens.engine.embed.index import embedding_meta, list_embedding_models
from hemalens.engine.embed.network import EmbeddingNet, EmbeddingSpec
from hemalens.engine.errors import ProjectError
from hemalens.engine.models.weights import (
    expected_shapes,
    load_arrays,
    read_weights,
    state_to_arrays,
    write_weights,
)
from hemalens.engine.project.bundle import ProjectPaths
from hemalens.engine.project.derived import item_names, read_item, write_item
from hemalens.engine.project.store import (
    Project,
    check_group_name,
    iso_utc,
    locate_project,
    open_cells_h5,
    to_json,
)

__all__ = [
    "EMBEDDING_FORMAT",
    "cell_regions",
    "list_embedding_models",
    "load_embedding_model",
    "read_embeddings",
    "save_embedding_model",
]

EMBEDDING_FORMAT = "hemalens-embedding"
EMBEDDING_FORMAT_VERSION = 1






def _created(paths: ProjectPaths, name: str) -> str:
    with read_item(paths, "embeddings", name) as g:
        return str(g.attrs.get("created", "")) if g is not None else ""


def _resolve(paths: ProjectPaths, name: str | None) -> str:
    names = item_names(paths, "embeddings")
    if not names:
        raise ProjectError(paths.root,
                           "has no embedding models (run 'hemalens embed train' first)")
    if name is None:  # the newest
        return max(names, key=lambda n: (_created(paths, n), n))
    if name not in names:
        raise ProjectError(paths.root,
                           f"no embedding model {name!r} (has: {', '.join(sorted(names))})")
    return name


def _per_cell(values: Any, n: int, width: int | None, dtype: Any, fill: Any, what: str):
    shape = (n,) if width is None else (n, width)
    if values is None:
        return np.full(shape, fill, dtype)
    a = np.asarray(values)
    if a.shape != shape:
        raise ValueError(f"{what} has shape {a.shape}, expected {shape} (one row per cell)")
    return a.astype(dtype)


def save_embedding_model(
    project_path: str | PathLike[str],
    name: str,
    network: EmbeddingNet,
    *,
    embedding: np.ndarray,
    projection: np.ndarray | None = None,
    fold: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    history: Any = None,
) -> None:
    """Store an embedding network and per-cell results under ``/embeddings/<name>``.

    Parameters
    ----------
    project_path : str or PathLike
        The project file.
    name : str
        Model name (non-empty, no ``/``); an existing one is replaced.
    network : EmbeddingNet
        The trained network.
    embedding : numpy.ndarray
        ``(N_cells, dim)``: one row per project cell, NaN rows for cells not embedded.
    projection : numpy.ndarray, optional
        ``(N_cells, 2)`` 2-D map; NaN everywhere when omitted.
    fold : numpy.ndarray, optional
        ``(N_cells,)`` test fold per cell; -1 everywhere when omitted.
    class_names : sequence of str
        Names of the class codes the network was trained on.
    config, metrics : dict, optional
        JSON-serialisable training config and results.
    history : object, optional
        JSON-serialisable per-epoch records.

    Raises
    ------
    ValueError
        Bad name, shapes that do not fit the project, non-JSON values; nothing is written.
    ProjectError
        Not a project, or it cannot be replaced (left as it was).
    """
    paths = locate_project(project_path)
    name = check_group_name(name, "embedding model")
    dim = int(network.spec.dim)
    attrs = {
        "format": EMBEDDING_FORMAT,
        "format_version": EMBEDDING_FORMAT_VERSION,
        "spec_json": to_json(network.spec.to_dict(), "spec"),
        "config_json": to_json(dict(config or {}), "config"),
        "metrics_json": to_json(dict(metrics or {}), "metrics"),
        "class_names_json": to_json([str(c) for c in class_names], "class_names"),
        "history_json": to_json(history if history is not None else [], "history"),
        "created": iso_utc(),
        "hemalens_version": __version__,
    }
    weights = state_to_arrays(network)
    with open_cells_h5(paths.root) as f:
        n = int(f["cells/cell_id"].shape[0]) if "cells/cell_id" in f else 0
    data = {
        "embedding": _per_cell(embedding, n, dim, np.float32, np.nan, "embedding"),
        "projection": _per_cell(projection, n, 2, np.float32, np.nan, "projection"),
        "fold": _per_cell(fold, n, None, np.int8, -1, "fold"),
    }

    def write(g: h5py.File) -> None:
        g.attrs.update(attrs)
        write_weights(g, weights)
        for key, arr in data.items():
            g.create_dataset(
                key, data=arr, chunks=True, compression="gzip", compression_opts=1,
                shuffle=True,
            )

    write_item(paths, "embeddings", name, write)


def load_embedding_model(
    project: str | PathLike[str] | Project, name: str | None = None
) -> tuple[EmbeddingNet, dict[str, Any]]:
    """Load a stored embedding network (the newest when ``name`` is None).

    Parameters
    ----------
    project : str, PathLike or Project
        The project (a :class:`Project` is re-opened read-only by its path).
    name : str, optional
        Model name.

    Returns
    -------
    (EmbeddingNet, dict)
        The network on the CPU in eval mode, and its metadata: ``name``, ``spec``,
        ``config``, ``metrics``, ``class_names``, ``history``, ``created``,
        ``hemalens_version``.

    Raises
    ------
    ProjectError
        Not a project, no embedding models, no such model, or a corrupt one.
    """
    paths = locate_project(project)
    name = _resolve(paths, name)
    with read_item(paths, "embeddings", name) as g:
        if g is None:
            raise ProjectError(paths.root, f"no embedding model {name!r}")
        try:
            meta = embedding_meta(g, name)
            spec = EmbeddingSpec.from_dict(meta["spec"])
            net = EmbeddingNet(spec)
            net = load_arrays(net, read_weights(g, expected_shapes(net)),
                              what=f"a {spec.backbone} embedding network")
        except (ValueError, KeyError, TypeError, RuntimeError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ProjectError(paths.root,
                               f"embedding model {name!r} is corrupt: {first}") from err
    return net.eval(), meta


def cell_regions(project: Project) -> np.ndarray:
    """Region code of every cell: its input's (donor, run), or the input itself.

    Regions (cells that must share a cross-validation fold) are the ``run`` of the cell's
    input row, qualified by its ``donor`` (slide) so equal run names on two slides stay
    apart; an input without a run is a region of its own, and cells without an input
    (``input_id`` -1) share one.

    Parameters
    ----------
    project : Project
        An open project.

    Returns
    -------
    numpy.ndarray
        ``(N_cells,)`` int64 codes ``0..R-1``.
    """
    input_id = np.asarray(project.cells["input_id"], np.int64)
    n_in = len(project.inputs.get("file", [])) if project.inputs else 0
    run = np.asarray(project.inputs.get("run", np.full(n_in, "", str)), str)
    donor = np.asarray(project.inputs.get("donor", np.full(n_in, "", str)), str)
    pairs = zip(donor, run, strict=True)
    keys = [f"{d}\x1f{r}" if r else f"\x1finput {i}" for i, (d, r) in enumerate(pairs)]
    keys.append("\x1fnone")
    per_cell = np.array(keys, dtype=str)[np.where(input_id >= 0, input_id, len(keys) - 1)]
    _, codes = np.unique(per_cell, return_inverse=True)
    return codes.astype(np.int64).reshape(-1)


def read_embeddings(
    project: str | PathLike[str] | Project, name: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read the stored embeddings of the labelled cells with their regions (for the dry-run).

    Uses the cells that have an embedding (finite row), passed QC and carry a *current*
    given label (relabels after training count). Classes no such cell carries are left
    out, so the codes run over ``0..K-1``.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.
    name : str, optional
        Embedding model; default the newest.

    Returns
    -------
    X : numpy.ndarray
        ``(M, dim)`` float32 embeddings.
    y : numpy.ndarray
        ``(M,)`` int64 class codes into ``class_names``.
    groups : numpy.ndarray
        ``(M,)`` int64 region codes (see :func:`cell_regions`).
    class_names : list of str
        Name of each code.

    Raises
    ------
    ProjectError
        Not a project, no such model, or no labelled embedded cell.
    """
    paths = locate_project(project)
    path = paths.root
    name = _resolve(paths, name)
    with read_item(paths, "embeddings", name) as g:
        ds = g.get("embedding") if g is not None else None
        if not isinstance(ds, h5py.Dataset):
            raise ProjectError(path, f"embedding model {name!r} has no stored embedding")
        emb = np.asarray(ds[()], np.float32)
    with Project.open(path) as p:
        if emb.shape[0] != p.n_cells:
            raise ProjectError(
                path, f"embedding {name!r} has {emb.shape[0]} rows for {p.n_cells} cells"
            )
        given = np.asarray(p.cells["given_label"], np.int64)
        use = (
            np.isfinite(emb).all(axis=1) & np.asarray(p.cells["qc_pass"], bool) & (given >= 0)
        )
        regions = cell_regions(p)
        classes = list(p.classes)
    if not use.any():
        raise ProjectError(path, f"embedding {name!r} has no labelled, QC-passed cell")
    used = np.unique(given[use])
    y = np.searchsorted(used, given[use]).astype(np.int64)
    return emb[use], y, regions[use], [str(classes[c]) for c in used]
