"""Trained models in the project: save, load, list, switch the active one.

Each model is one file, ``derived/models/<name>.h5`` (plain HDF5, readable with h5py
alone; no pickles)::

    /weights/<k>                 one float32 dataset per ``state_dict`` entry ``k``
    /split/{train,val,test}      int64 cell ids (see ``split_ids`` below)
    /arrays/<k>                  numeric arrays fitted with the model (e.g. an OOD detector)
    attrs  format ("hemalens-model"), format_version, spec_json (:class:`ModelSpec`),
           class_names_json, metrics_json, history_json (one dict per epoch), extra_json,
           temperature (float, NaN until calibrated), created (ISO 8601 UTC),
           hemalens_version, split_ids ("cell_id", or "index" when the saver gave no cell
           ids), trained_on_json (patch shape and normalisation of the project's patches),
           train_config_json (the :class:`~hemalens.engine.train.TrainConfig`, or null)

The active model is the annotation store's ``active_model`` setting
(:mod:`hemalens.engine.project.model_index`). A model file is written whole and renamed
into place (:func:`~hemalens.engine.project.derived.write_item`): an error or an
interruption leaves the project as it was, and saving a model never copies the patches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from hemalens.engine import __version__
from hemalens.engine.errors import ProjectError
from hemalens.engine.models.spec import Classifier, ModelSpec
from hemalens.engine.models.weights import (
    expected_shapes,
    load_arrays,
    read_weights,
    state_to_arrays,
    write_weights,
)
from hemalens.engine.project.bundle import ProjectPaths, project_lock
from hemalens.engine.project.derived import delete_items, read_item, write_item
from hemalens.engine.project.model_index import (
    active_model,
    model_names,
    require_model,
    set_active_setting,
)
from hemalens.engine.project.store import (
    Project,
    attr_json,
    attr_text,
    check_group_name,
    iso_utc,
    locate_project,
    one_line,
    open_cells_h5,
    to_json,
)

if TYPE_CHECKING:  # engine.train imports this package; no runtime cycle
    from hemalens.engine.train.loop import TrainResult

__all__ = [
    "delete_model",
    "list_models",
    "load_model",
    "save_model",
    "set_active_model",
    "update_model",
]

MODEL_FORMAT = "hemalens-model"
MODEL_FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
_UNSET: Any = object()






def _check_temperature(temperature: float | None) -> float:
    if temperature is None:
        return math.nan
    t = float(temperature)
    if math.isnan(t):
        return t
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive number or None, got {temperature}")
    return t








def _check_arrays(arrays: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Validate the fitted arrays stored beside a model's weights (numeric, plain names)."""
    out: dict[str, np.ndarray] = {}
    for key, value in dict(arrays or {}).items():
        k = check_group_name(key, "array")
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"array {k!r} must be numeric, got {a.dtype}")
        out[k] = a
    return out


def _write_arrays(g: h5py.Group, arrays: Mapping[str, np.ndarray]) -> None:
    if not arrays:
        return
    ag = g.require_group("arrays")
    for key, a in arrays.items():
        if key in ag:
            del ag[key]
        ag.create_dataset(key, data=a)


def _read_meta(g: h5py.File, name: str, active: str | None, *,
               with_split: bool = True) -> dict[str, Any]:
    a = g.attrs
    t = float(a.get("temperature", math.nan))
    meta: dict[str, Any] = {
        "name": name,
        "spec": attr_json(a, "spec_json", {}),
        "class_names": attr_json(a, "class_names_json", []),
        "metrics": attr_json(a, "metrics_json", {}),
        "history": attr_json(a, "history_json", []),
        "extra": attr_json(a, "extra_json", {}),
        "trained_on": attr_json(a, "trained_on_json", {}),
        "train_config": attr_json(a, "train_config_json", None),
        "temperature": None if math.isnan(t) else t,
        "created": attr_text(a.get("created")) or "",
        "hemalens_version": str(a.get("hemalens_version", "")),
        "split_ids": str(a.get("split_ids", "cell_id")),
        "active": name == active,
        "arrays": {k: v[()] for k, v in g["arrays"].items() if isinstance(v, h5py.Dataset)}
        if isinstance(g.get("arrays"), h5py.Group) else {},
    }
    if with_split:
        sg = g.get("split")
        meta["split"] = {
            k: np.asarray(sg[k][()], np.int64) if sg is not None and k in sg else np.zeros(0, int)
            for k in SPLITS
        }
    return meta






def save_model(
    project_path: str | PathLike[str],
    name: str,
    result: TrainResult,
    class_names: list[str] | tuple[str, ...],
    *,
    temperature: float | None = None,
    extra: Mapping[str, Any] | None = None,
    make_active: bool = True,
    cell_ids: np.ndarray | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Store a trained model in the project, atomically (replaces a model of that name).

    Parameters
    ----------
    project_path : str or PathLike
        The project file.
    name : str
        Model name (non-empty, no ``/``).
    result : TrainResult
        From :func:`hemalens.engine.train.train_classifier`: model, spec, split, history,
        best epoch, validation macro-F1, seconds, device.
    class_names : sequence of str
        Name of each output (length ``spec.n_classes``).
    temperature : float, optional
        Fitted temperature; None (stored as NaN) until calibrated.
    extra : dict, optional
        Anything else JSON-serialisable (e.g. test metrics, the training config).
    make_active : bool
        Mark this model as the project's active one.
    cell_ids : numpy.ndarray, optional
        Cell id of each row of the training arrays (as returned by
        :func:`~hemalens.engine.train.training_data`): ``result.split`` holds row indices,
        and the project stores cell ids. Without it the indices are stored as they are
        and ``split_ids`` says ``"index"``.
    arrays : dict of str to numpy.ndarray, optional
        Numeric arrays fitted with the model (e.g. an out-of-distribution detector's class
        means), stored as datasets ``arrays/<key>`` and returned by :func:`load_model` in
        ``meta["arrays"]``.

    Raises
    ------
    ValueError
        Bad name, class names, temperature, split, non-JSON ``extra`` or non-numeric
        ``arrays``; nothing written.
    ProjectError
        Not a project, or it cannot be replaced; it is left as it was.
    """
    paths = locate_project(project_path)
    name = check_group_name(name, "model")
    spec: ModelSpec = result.spec
    classes = [str(c) for c in class_names]
    if len(classes) != spec.n_classes:
        raise ValueError(f"{len(classes)} class names for a model with {spec.n_classes} outputs")
    t = _check_temperature(temperature)
    split: dict[str, np.ndarray] = {}
    for k in SPLITS:
        idx = np.asarray(result.split.get(k, np.zeros(0, np.int64))).reshape(-1)
        if idx.size and idx.dtype.kind not in "iu":
            raise ValueError(f"split[{k!r}] must hold integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
        if cell_ids is not None:
            ids = np.asarray(cell_ids, np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= ids.size):
                raise ValueError(f"split[{k!r}] indexes beyond the {ids.size} cell ids given")
            idx = ids[idx]
        split[k] = idx
    metrics = {
        "val_macro_f1": float(result.val_macro_f1),
        "best_epoch": int(result.best_epoch),
        "epochs_run": len(result.history),
        "seconds": float(result.seconds),
        "device": str(result.device),
        "n_train": int(split["train"].size),
        "n_val": int(split["val"].size),
        "n_test": int(split["test"].size),
    }
    attrs = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "spec_json": to_json(spec.to_dict(), "spec"),
        "class_names_json": to_json(classes, "class names"),
        "metrics_json": to_json(metrics, "metrics"),
        "history_json": to_json(list(result.history), "history"),
        "extra_json": to_json(dict(extra or {}), "extra"),
        "temperature": t,
        "created": iso_utc(),
        "hemalens_version": __version__,
        "split_ids": "index" if cell_ids is None else "cell_id",
    }
    config = getattr(result, "config", None)
    attrs["train_config_json"] = to_json(None if config is None else config.to_dict(), "config")
    weights = state_to_arrays(result.model)
    fitted = _check_arrays(arrays)
    with open_cells_h5(paths.root) as f:
        img = f["patches/images"]
        trained_on = {
            "patch_shape": list(img.shape[1:]),
            "normalisation": json.loads(img.attrs.get("normalisation_json", "{}")),
        }
    attrs["trained_on_json"] = to_json(trained_on, "trained_on")

    def write(g: h5py.File) -> None:
        g.attrs.update(attrs)
        write_weights(g, weights)
        sg = g.create_group("split")
        for key, idx in split.items():
            sg.create_dataset(key, data=idx, dtype=np.int64)
        _write_arrays(g, fitted)

    def mark_active(p: ProjectPaths) -> None:
        # under the project lock, just before the file appears: the first model is active
        if make_active or not model_names(p):
            set_active_setting(p, name)

    write_item(paths, "models", name, write, check=mark_active)


def _load(paths: ProjectPaths, name: str) -> tuple[Classifier, dict[str, Any]]:
    from hemalens.engine.models import build_model  # the package imports this module

    active = active_model(paths)
    with read_item(paths, "models", name) as g:
        if g is None:
            raise ProjectError(paths.root, f"no model named {name!r}")
        try:
            meta = _read_meta(g, name, active)
            spec = ModelSpec.from_dict(meta["spec"])
            if len(meta["class_names"]) != spec.n_classes or not all(
                    isinstance(c, str) for c in meta["class_names"]):
                raise ValueError(f"{len(meta['class_names'])} class names for "
                                 f"{spec.n_classes} outputs")
            model = build_model(spec)
            model = load_arrays(model, read_weights(g, expected_shapes(model)),
                                what=f"a {spec.arch} model")
        except (ValueError, KeyError, TypeError, OSError, RuntimeError) as err:
            raise ProjectError(paths.item("models", name),
                               f"model {name!r} is damaged: {one_line(err)}") from err
    return model, meta


def load_model(
    project_path_or_project: str | PathLike[str] | Project, name: str | None = None
) -> tuple[Classifier, dict[str, Any]]:
    """Load a model from the project (the active one when ``name`` is None).

    Parameters
    ----------
    project_path_or_project : str, PathLike or Project
        The project.
    name : str, optional
        Model name; default the active model (or, without an active mark, the newest).

    Returns
    -------
    (Classifier, dict)
        The model on the CPU in eval mode, and its metadata: ``name``, ``spec`` (dict),
        ``class_names``, ``split`` ({train, val, test}: int64 arrays), ``split_ids``,
        ``metrics``, ``history``, ``extra``, ``arrays``, ``trained_on``,
        ``train_config``, ``temperature`` (None until calibrated), ``created``,
        ``hemalens_version``, ``active``.

    Raises
    ------
    ProjectError
        Not a project, no models, no model of that name, or a corrupt model.
    """
    paths = locate_project(project_path_or_project)
    if name is None:
        name = active_model(paths) or ""  # "" only without models: require_model says so
    require_model(paths, name)
    return _load(paths, name)


def list_models(project: str | PathLike[str] | Project) -> list[dict[str, Any]]:
    """Summarise the models stored in a project, oldest first.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.

    Returns
    -------
    list of dict
        One per model: ``name``, ``arch``, ``n_classes``, ``dropout``, ``input_size``,
        ``class_names``, ``created``, ``active``, ``temperature``, ``metrics``. Empty
        when the project has none.

    Raises
    ------
    ProjectError
        Not a readable project.
    """
    paths = locate_project(project)
    active = active_model(paths)
    rows = []
    for n in model_names(paths):
        with read_item(paths, "models", n) as g:
            if g is None:
                continue  # deleted meanwhile
            m = _read_meta(g, n, active, with_split=False)
        rows.append(
            {
                "name": n,
                **{k: m["spec"].get(k) for k in ("arch", "n_classes", "dropout", "input_size")},
                "class_names": m["class_names"],
                "created": m["created"],
                "active": m["active"],
                "temperature": m["temperature"],
                "metrics": m["metrics"],
            }
        )
    return sorted(rows, key=lambda r: (r["created"], r["name"]))


def set_active_model(project_path: str | PathLike[str] | Project, name: str) -> None:
    """Make ``name`` the project's active model (one durable setting).

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    name : str
        An existing model.

    Raises
    ------
    ProjectError
        No such model, or the project cannot be written.
    """
    paths = locate_project(project_path)
    with project_lock(paths.root):
        require_model(paths, name)
        set_active_setting(paths, name)


def update_model(
    project_path: str | PathLike[str] | Project,
    name: str,
    *,
    temperature: float | None = _UNSET,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Change a stored model's temperature and merge into its metrics / extra / arrays.

    The model's file is rewritten whole (its weights included) and renamed into place.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    name : str
        An existing model.
    temperature : float or None, optional
        New temperature (None clears it); left as it is when not given.
    metrics, extra : dict, optional
        Keys merged into the stored ``metrics`` / ``extra`` (JSON-serialisable).
    arrays : dict of str to numpy.ndarray, optional
        Fitted arrays added or replaced (see :func:`save_model`).

    Raises
    ------
    ValueError
        Bad temperature or non-JSON values; nothing written.
    ProjectError
        No such model, the model changed meanwhile, or the project cannot be written.
    """
    paths = locate_project(project_path)
    t = None if temperature is _UNSET else _check_temperature(temperature)
    to_json(dict(metrics or {}), "metrics")
    to_json(dict(extra or {}), "extra")
    fitted = _check_arrays(arrays)
    require_model(paths, name)
    with read_item(paths, "models", name) as g:
        if g is None:
            raise ProjectError(paths.root, f"no model named {name!r}")
        stamp = attr_text(g.attrs.get("created"))

    def write(dst: h5py.File) -> None:
        with read_item(paths, "models", name) as src:
            if src is None:
                raise ProjectError(paths.root, f"model {name!r} was deleted meanwhile")
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for key in src:
                src.copy(src[key], dst, name=key)
        _write_arrays(dst, fitted)
        a = dst.attrs
        if t is not None:
            a["temperature"] = t
        for key, new in (("metrics_json", metrics), ("extra_json", extra)):
            if new:
                a[key] = to_json({**attr_json(a, key, {}), **dict(new)}, key)

    def unchanged(p: ProjectPaths) -> None:
        with read_item(p, "models", name) as g:
            if g is None or attr_text(g.attrs.get("created")) != stamp:
                raise ProjectError(p.root, f"model {name!r} was replaced while it was being "
                                           "updated; the update was not saved")

    write_item(paths, "models", name, write, check=unchanged)


def delete_model(project_path: str | PathLike[str] | Project, name: str) -> None:
    """Remove a model; if it was active, the newest remaining one becomes so.

    Its predictions and cached explanations go with it: they describe a model that no
    longer exists.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    name : str
        An existing model.

    Raises
    ------
    ProjectError
        No such model, or the project cannot be written.
    """
    paths = locate_project(project_path)
    with project_lock(paths.root):
        require_model(paths, name)
        was_active = active_model(paths) == name
        delete_items(paths, "models", [name])
        delete_items(paths, "predictions", [name])
        delete_items(paths, "explanations", [name])
        if was_active:
            set_active_setting(paths, None)
            nxt = active_model(paths)
            if nxt is not None:
                set_active_setting(paths, nxt)
