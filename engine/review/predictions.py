"""Predictions in the project: ``derived/predictions/<model>.h5``, one file per model.

Layout (plain HDF5, readable with h5py alone)::

    attrs  attrs_json (JSON), created (ISO 8601 UTC), n_cells
    /<col> one dataset per column, first axis = cells (row = cell_id)

Columns written by ``hemalens predict`` (:data:`PREDICTION_COLUMNS`):

``predicted``
    int16 ``(N,)`` class code of the chosen confidence measure, an index into the
    ``class_names`` attribute (-1: no prediction, e.g. a cell that failed QC).
``confidence``
    float32 ``(N,)`` calibrated confidence of ``predicted`` (0..1, NaN: none).
``probs``
    float32 ``(N, K)`` frequentist softmax probabilities, temperature-scaled.
``mc_mean``, ``mc_median``, ``mc_std``
    float32 ``(N, K)`` MC-dropout summaries per class (the median renormalised to sum 1).
``ood_score``, ``ood``
    float32 ``(N,)`` out-of-distribution score and bool ``(N,)`` flag
    (:mod:`hemalens.engine.review.ood_detector`), when the model has a detector; flagged
    cells are counted apart in the differential.
``conf_<measure>``
    float32 ``(N,)`` confidence of every measure of
    :func:`hemalens.engine.calibrate.confidence_measures` (``freq``, ``freq_ts``,
    ``mc_mean``, ``mc_mean_ts``, ``mc_median``, ``mc_std``).

Attributes (``attrs_json``): ``model``, ``class_names``, ``measure`` (the one behind
``predicted``/``confidence``), ``temperature``, ``mc_temperature``, ``mc_passes``,
``ood_threshold``, ``created``, ``model_created`` (the model's stamp: predictions of a
model that was since replaced are refused at write time); other JSON-ready keys are kept
as given.

The file is written whole and renamed into place: writing costs the predictions, never a
copy of the patches, and a failure leaves the previous predictions untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

import h5py
import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.bundle import ProjectPaths
from hemalens.engine.project.derived import item_names, read_item, write_item
from hemalens.engine.project.model_index import active_model, model_names
from hemalens.engine.project.store import (
    Project,
    attr_text,
    check_group_name,
    iso_utc,
    locate_project,
    open_cells_h5,
    parse_json,
    to_json,
)

__all__ = ["PREDICTION_COLUMNS", "active_model_name", "read_predictions", "write_predictions"]

#: Documented prediction columns (name -> description); ``conf_<measure>`` columns too.
PREDICTION_COLUMNS: dict[str, str] = {
    "predicted": "int16 class code of the chosen measure, index into class_names, -1 = none",
    "confidence": "float32 calibrated confidence of the predicted class",
    "probs": "float32 (N, K) frequentist softmax probabilities, temperature-scaled",
    "mc_mean": "float32 (N, K) mean of the MC-dropout probabilities",
    "mc_median": "float32 (N, K) median of the MC-dropout probabilities, renormalised",
    "mc_std": "float32 (N, K) standard deviation of the MC-dropout probabilities",
    "ood_score": "float32 out-of-distribution score (Fisher combination; higher = more foreign)",
    "ood": "bool out of distribution: ood_score above the threshold keeping 95 % of "
           "validation cells",
}




def _column(name: str, values: Any, n: int) -> np.ndarray:
    """Validate one column: (n,) or (n, K), numbers or booleans; floats stored as float32."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"bad prediction column name {name!r}")
    a = np.asarray(values)
    if a.ndim not in (1, 2) or a.shape[0] != n:
        raise ValueError(
            f"prediction column {name!r} has shape {a.shape}, expected ({n},) or ({n}, K): "
            f"the project has {n} cells"
        )
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype.kind in "biu":
        return a
    raise ValueError(f"prediction column {name!r} must be numeric, got {a.dtype}")


def _n_cells(paths: ProjectPaths) -> int:
    with open_cells_h5(paths.root) as f:
        return int(f["cells/cell_id"].shape[0])


def write_predictions(
    project_path: str | PathLike[str] | Project,
    model_name: str,
    columns: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
) -> None:
    """Store the predictions of one model in the project, atomically.

    An earlier prediction of the same model is replaced whole. See the module docstring
    for the columns.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    model_name : str
        Name of the model.
    columns : dict of str to numpy.ndarray
        Column name -> ``(N,)`` or ``(N, K)`` array with ``N`` = cells in the project.
        Floats are stored as float32, integers and booleans as given.
    attrs : dict
        JSON-ready metadata (``class_names``, ``measure``, ``temperature``,
        ``model_created``, ...); ``model`` and ``created`` (now, ISO 8601 UTC) are filled
        in when missing.

    Raises
    ------
    ValueError
        Bad model or column name, no columns, a column whose length is not the project's
        number of cells, a non-numeric column, or attrs that are not JSON serialisable;
        nothing is written.
    ProjectError
        The project is not readable or cannot be written, or the model was replaced or
        deleted while predicting; nothing is written.
    """
    paths = locate_project(project_path)
    name = check_group_name(model_name, "model")
    if not columns:
        raise ValueError("no prediction columns to write")
    n = _n_cells(paths)
    data = {str(k): _column(k, v, n) for k, v in columns.items()}
    meta = {**dict(attrs)}
    meta.setdefault("model", name)
    meta.setdefault("created", iso_utc())
    text = to_json(dict(meta), "prediction attrs")
    stamp = meta.get("model_created")

    def write(g: h5py.File) -> None:
        for col, arr in data.items():
            ds = g.create_dataset(col, data=arr)
            desc = PREDICTION_COLUMNS.get(col)
            if desc is None and col.startswith("conf_"):
                desc = f"float32 confidence by the measure {col[5:]!r}"
            if desc:
                ds.attrs["description"] = desc
        g.attrs["attrs_json"] = text
        g.attrs["created"] = str(meta["created"])
        g.attrs["n_cells"] = n

    def model_unchanged(p: ProjectPaths) -> None:
        if stamp is None:
            return
        with read_item(p, "models", name) as m:
            current = attr_text(m.attrs.get("created")) if m is not None else None
        if current != stamp:
            what = "deleted" if current is None else "replaced by a newer training"
            raise ProjectError(p.root, f"model {name!r} was {what} while predicting; the "
                                       "predictions were not saved")

    write_item(paths, "predictions", name, write, check=model_unchanged)


def active_model_name(project: str | PathLike[str] | Project | ProjectPaths) -> str | None:
    """Return the model whose predictions the project shows by default.

    The active model when it has predictions, else the model with the newest predictions.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.

    Returns
    -------
    str or None
        A model with predictions, or None when there are none.
    """
    paths = project if isinstance(project, ProjectPaths) else locate_project(project)
    names = item_names(paths, "predictions")
    if not names:
        return None
    active = active_model(paths) if model_names(paths) else None
    if active in names:
        return active

    def created(k: str) -> tuple[str, str]:
        with read_item(paths, "predictions", k) as g:
            return ((attr_text(g.attrs.get("created")) or "") if g is not None else "", k)

    # ISO 8601 UTC stamps sort as text; ties keep the last name
    return max(names, key=created)


def read_predictions(
    project: str | PathLike[str] | Project, model_name: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Read the stored predictions of a model.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.
    model_name : str, optional
        Which model; default :func:`active_model_name`.

    Returns
    -------
    (dict of str to numpy.ndarray, dict) or None
        The columns and the attributes (``model`` and ``created`` always present), or None
        when the project has no predictions (of that model).

    Raises
    ------
    ProjectError
        Not a readable project, or stored predictions that do not fit its cells.
    """
    paths = locate_project(project)
    name = active_model_name(paths) if model_name is None else check_group_name(model_name,
                                                                                "model")
    if name is None:
        return None
    n = project.n_cells if isinstance(project, Project) else _n_cells(paths)
    with read_item(paths, "predictions", name) as g:
        if g is None:
            return None
        file = paths.item("predictions", name)
        cols: dict[str, np.ndarray] = {}
        for col, ds in g.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.ndim not in (1, 2) or ds.shape[0] != n:
                raise ProjectError(
                    file, f"damaged predictions: column {col!r} has shape {ds.shape} for "
                          f"{n} cells",
                )
            cols[col] = ds[()]
        try:
            attrs = parse_json(attr_text(g.attrs.get("attrs_json")) or "{}", "attrs_json",
                               kind=dict)
        except ValueError as err:
            raise ProjectError(file, f"damaged predictions: {err}") from None
        for col in ("predicted", "confidence"):
            if col not in cols:
                raise ProjectError(file, f"damaged predictions: the {col!r} column is missing")
        if cols["predicted"].ndim != 1 or cols["predicted"].dtype.kind not in "iu":
            raise ProjectError(file, "damaged predictions: 'predicted' is not class codes")
        names = attrs.get("class_names")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
                raise ProjectError(file, "damaged predictions: class_names is not a list of "
                                         "names")
            pred = cols["predicted"]
            if pred.size and (pred.min() < -1 or pred.max() >= len(names)):
                raise ProjectError(file, "damaged predictions: class codes outside the "
                                         "model's classes")
        attrs["model"] = name
        attrs.setdefault("created", attr_text(g.attrs.get("created")) or "")
        return cols, attrs
