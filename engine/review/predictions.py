"""Predictions in the project file: ``/predictions/<model>/<column>``.

Layout (plain HDF5, readable with h5py alone)::

    /predictions                attrs: latest (name of the model written last)
    /predictions/<model>        attrs: attrs_json (JSON), created (ISO 8601 UTC), n_cells
    /predictions/<model>/<col>  one dataset per column, first axis = cells (row = cell_id)

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
``conf_<measure>``
    float32 ``(N,)`` confidence of every measure of
    :func:`hemalens.engine.calibrate.confidence_measures` (``freq``, ``freq_ts``,
    ``mc_mean``, ``mc_mean_ts``, ``mc_median``, ``mc_std``).

Attributes (``attrs_json``): ``model``, ``class_names``, ``measure`` (the one behind
``predicted``/``confidence``), ``temperature``, ``mc_temperature``, ``mc_passes``,
``created``; other JSON-ready keys are kept as given.

Writing goes through :func:`~hemalens.engine.project.atomic.atomic_update`: the project is
copied, the copy edited and moved over the original, so a failure leaves it untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.atomic import atomic_update, path_lock
from hemalens.engine.project.store import (
    Project,
    attr_text,
    check_group_name,
    iso_utc,
    open_project_h5,
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


def _n_cells(f: h5py.File) -> int:
    return int(f["cells/cell_id"].shape[0])


def write_predictions(
    project_path: str | PathLike[str],
    model_name: str,
    columns: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
) -> None:
    """Store the predictions of one model in the project, atomically.

    An earlier prediction of the same model is replaced (its datasets are overwritten in
    place when shape and type match, so re-predicting does not grow the file); columns it
    had that ``columns`` lacks are removed. See the module docstring for the columns.

    Parameters
    ----------
    project_path : str or PathLike
        The project file.
    model_name : str
        Name of the model (``/predictions/<model_name>``).
    columns : dict of str to numpy.ndarray
        Column name -> ``(N,)`` or ``(N, K)`` array with ``N`` = cells in the project.
        Floats are stored as float32, integers and booleans as given.
    attrs : dict
        JSON-ready metadata (``class_names``, ``measure``, ``temperature``, ...); ``model``
        and ``created`` (now, ISO 8601 UTC) are filled in when missing.

    Raises
    ------
    ValueError
        Bad model or column name, no columns, a column whose length is not the project's
        number of cells, a non-numeric column, or attrs that are not JSON serialisable;
        nothing is written.
    ProjectError
        The project is not readable or cannot be replaced; it is left as it was.
    """
    name = check_group_name(model_name, "model")
    if not columns:
        raise ValueError("no prediction columns to write")
    with open_project_h5(project_path, "r") as f:
        n = _n_cells(f)
    data = {str(k): _column(k, v, n) for k, v in columns.items()}
    meta = {**dict(attrs)}
    meta.setdefault("model", name)
    meta.setdefault("created", iso_utc())
    text = to_json(dict(meta), "prediction attrs")

    def modify(tmp: Path) -> None:
        with h5py.File(tmp, "r+") as f:
            root = f.require_group("predictions")
            g = root.require_group(name)
            for old in list(g):
                if old not in data:
                    del g[old]
            for col, arr in data.items():
                ds = g.get(col)
                if isinstance(ds, h5py.Dataset) and ds.shape == arr.shape and ds.dtype == arr.dtype:
                    ds[...] = arr
                    continue
                if col in g:
                    del g[col]
                # contiguous, uncompressed: probabilities barely compress (noisy mantissas,
                # ~100 bytes per cell in all) and an in-place rewrite then reuses the space,
                # where HDF5 would leak the old chunks of a compressed dataset
                ds = g.create_dataset(col, data=arr)
                desc = PREDICTION_COLUMNS.get(col)
                if desc is None and col.startswith("conf_"):
                    desc = f"float32 confidence by the measure {col[5:]!r}"
                if desc:
                    ds.attrs["description"] = desc
            g.attrs["attrs_json"] = text
            g.attrs["created"] = str(meta["created"])
            g.attrs["n_cells"] = n
            root.attrs["latest"] = name
            f["meta"].attrs["modified"] = iso_utc()

    # relabel() replaces the same file: without its lock one of two concurrent updates
    # (e.g. a GUI relabel during a predict job) would copy the old file and undo the other
    with path_lock(project_path):
        atomic_update(project_path, modify)




def active_model_name(f: h5py.File) -> str | None:
    """Return the model whose predictions the project shows by default.

    The active model (``/models`` attribute ``active``) when it has predictions, else the
    most recently created entry of ``/predictions``.

    Parameters
    ----------
    f : h5py.File
        An open project file.

    Returns
    -------
    str or None
        A name in ``/predictions``, or None when there are none.
    """
    preds = f.get("predictions")
    if not isinstance(preds, h5py.Group):
        return None
    names = [k for k, v in preds.items() if isinstance(v, h5py.Group)]
    if not names:
        return None
    models = f.get("models")
    active = attr_text(models.attrs.get("active")) if isinstance(models, h5py.Group) else None
    if active in names:
        return active
    # ISO 8601 UTC stamps sort as text; ties keep the last listed
    return max(names, key=lambda k: (attr_text(preds[k].attrs.get("created")) or "", k))


def read_predictions(
    project: str | PathLike[str] | Project, model_name: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Read the stored predictions of a model.

    Parameters
    ----------
    project : str, PathLike or Project
        The project file, or an open :class:`~hemalens.engine.project.store.Project`
        (read from its path: the version on disk now).
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
    path = project.path if isinstance(project, Project) else Path(project)
    with open_project_h5(path, "r") as f:
        name = active_model_name(f) if model_name is None else check_group_name(model_name, "model")
        g = f.get(f"predictions/{name}") if name is not None else None
        if not isinstance(g, h5py.Group):
            return None
        n = _n_cells(f)
        cols: dict[str, np.ndarray] = {}
        for col, ds in g.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.ndim not in (1, 2) or ds.shape[0] != n:
                raise ProjectError(
                    path,
                    f"corrupt predictions: /predictions/{name}/{col} has shape {ds.shape} "
                    f"for {n} cells",
                )
            cols[col] = ds[()]
        try:
            attrs = json.loads(attr_text(g.attrs.get("attrs_json")) or "{}")
        except json.JSONDecodeError as err:
            raise ProjectError(path, f"corrupt predictions of {name!r}: bad attrs JSON") from err
        attrs["model"] = name
        attrs.setdefault("created", attr_text(g.attrs.get("created")) or "")
        return cols, attrs
