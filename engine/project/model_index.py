"""Which classifiers a project holds and which one is active: no torch, no weights read.

Models are the files ``derived/models/<name>.h5``; the active one is the annotation
store's setting ``active_model`` (a transaction, so switching it is atomic and cheap).
Torch-free (unlike :mod:`hemalens.engine.models`), so the GUI thread can ask cheaply;
:mod:`hemalens.engine.models.store` makes the same choice through these functions.
"""

from __future__ import annotations

from os import PathLike
from typing import Any, TypeAlias

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.annotations import AnnotationStore
from hemalens.engine.project.bundle import ProjectPaths
from hemalens.engine.project.derived import item_names, read_item
from hemalens.engine.project.store import Project, attr_json, attr_text, locate_project

__all__ = [
    "ACTIVE_SETTING",
    "active_model",
    "active_model_info",
    "model_info",
    "model_split",
    "model_summaries",
    "model_names",
    "require_model",
    "set_active_setting",
]

#: The annotation-store setting naming the active model.
ACTIVE_SETTING = "active_model"

ProjectLike: TypeAlias = str | PathLike[str] | Project | ProjectPaths


def _paths(project: ProjectLike) -> ProjectPaths:
    return project if isinstance(project, ProjectPaths) else locate_project(project)


def model_names(project: ProjectLike) -> list[str]:
    """Return the names of the stored models, sorted.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.

    Returns
    -------
    list of str
        Empty when there are none.
    """
    return item_names(_paths(project), "models")


def _created(paths: ProjectPaths, name: str) -> str:
    try:
        with read_item(paths, "models", name) as f:
            return (attr_text(f.attrs.get("created")) or "") if f is not None else ""
    except ProjectError:
        return ""


def active_model(project: ProjectLike) -> str | None:
    """Return the active model: the ``active_model`` setting, else the newest.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.

    Returns
    -------
    str or None
        Its name, or None when the project has no model.
    """
    paths = _paths(project)
    names = model_names(paths)
    if not names:
        return None
    with AnnotationStore.settings_only(paths.annotations) as store:
        act = store.setting(ACTIVE_SETTING)
    if act in names:
        return act
    # no (valid) active mark: the most recently created model (ISO stamps sort as text)
    return max(names, key=lambda n: (_created(paths, n), n))


def set_active_setting(paths: ProjectPaths, name: str | None) -> None:
    """Record ``name`` as the active model (None clears the mark)."""
    with AnnotationStore.settings_only(paths.annotations) as store:
        store.set_setting(ACTIVE_SETTING, name)


def require_model(project: ProjectLike, name: str) -> None:
    """Raise unless the project holds a model called ``name``.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.
    name : str
        The model asked for.

    Raises
    ------
    ProjectError
        No model at all (with a hint to train one), or none of that name.
    """
    paths = _paths(project)
    names = model_names(paths)
    if not names:
        raise ProjectError(paths.root,
                           "has no trained model (train one first, e.g. `hemalens train`)")
    if name not in names:
        raise ProjectError(paths.root, f"no model named {name!r}; models: {sorted(names)}")


def _info(paths: ProjectPaths, name: str) -> dict[str, Any]:
    with read_item(paths, "models", name) as f:
        if f is None:
            raise ProjectError(paths.root, f"no model named {name!r}")
        return {"name": name, "created": attr_text(f.attrs.get("created")) or "",
                "class_names": [str(c) for c in attr_json(f.attrs, "class_names_json", [])]}


def model_info(project: ProjectLike, name: str | None = None) -> dict[str, Any]:
    """Name, ``created`` stamp and class names of a model, without loading its weights.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.
    name : str, optional
        The model; default the active one.

    Returns
    -------
    dict
        ``{"name", "created", "class_names"}``.

    Raises
    ------
    ProjectError
        Not a readable project, no model, or no model of that name.
    """
    paths = _paths(project)
    chosen = (active_model(paths) or "") if name is None else name
    require_model(paths, chosen)
    return _info(paths, chosen)


def active_model_info(project: ProjectLike) -> dict[str, Any] | None:
    """Name, ``created`` stamp and class names of the active model, without loading it.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.

    Returns
    -------
    dict or None
        ``{"name", "created", "class_names"}``, or None when the project has no model.

    Raises
    ------
    ProjectError
        Not a readable project.
    """
    paths = _paths(project)
    name = active_model(paths)
    return None if name is None else _info(paths, name)


def model_split(project: ProjectLike, name: str) -> dict[str, Any]:
    """Return the cell ids a model trained, validated and was tested on, and its calibration.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.
    name : str
        The model.

    Returns
    -------
    dict
        ``{"train", "val", "test"}`` int64 cell ids (empty when the model stores row
        indices instead: ``split_ids`` "index"), ``"calibration"`` (the fitted
        temperatures etc., a dict) and ``"split_ids"``.

    Raises
    ------
    ProjectError
        No such model, or a damaged model file.
    """
    import numpy as np

    paths = _paths(project)
    require_model(paths, name)
    with read_item(paths, "models", name) as f:
        if f is None:
            raise ProjectError(paths.root, f"no model named {name!r}")
        try:
            kind = attr_text(f.attrs.get("split_ids")) or "cell_id"
            extra = attr_json(f.attrs, "extra_json", {})
            out: dict[str, Any] = {"split_ids": kind,
                                   "calibration": dict(extra.get("calibration") or {})}
            g = f.get("split")
            for part in ("train", "val", "test"):
                ids = np.asarray(g[part][()], np.int64) if g is not None and part in g else \
                    np.zeros(0, np.int64)
                out[part] = ids if kind == "cell_id" else np.zeros(0, np.int64)
        except (ValueError, KeyError, OSError) as err:
            raise ProjectError(paths.item("models", name),
                               f"model {name!r} is damaged: {err}") from err
    return out


def model_summaries(project: ProjectLike) -> list[dict[str, Any]]:
    """List the models for the models panel, oldest first, without torch or the weights.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.

    Returns
    -------
    list of dict
        ``name``, ``active``, ``created``, ``arch``, ``input_size``, ``class_names``,
        ``val_macro_f1``, ``test_f1`` (MC-mean inference, when scored), ``temperature``,
        ``ece`` and ``ece_ts`` (MC mean on the test split, when scored), ``epochs_run``,
        ``n_train``; a damaged model is listed with ``damaged`` (its reason).
    """
    import math

    paths = _paths(project)
    active = active_model(paths)
    rows = []
    for name in model_names(paths):
        row: dict[str, Any] = {"name": name, "active": name == active}
        try:
            with read_item(paths, "models", name) as f:
                if f is None:
                    continue
                a = f.attrs
                spec = attr_json(a, "spec_json", {})
                metrics = attr_json(a, "metrics_json", {})
                extra = attr_json(a, "extra_json", {})
                test = extra.get("test") or {}
                t = float(a.get("temperature", math.nan))
                row |= {
                    "created": attr_text(a.get("created")) or "",
                    "arch": spec.get("arch"), "input_size": spec.get("input_size"),
                    "class_names": attr_json(a, "class_names_json", []),
                    "val_macro_f1": metrics.get("val_macro_f1"),
                    "epochs_run": metrics.get("epochs_run"), "n_train": metrics.get("n_train"),
                    "test_f1": ((test.get("table1") or {}).get("mc_mean") or {}).get("f1"),
                    "ece": ((test.get("table2") or {}).get("mc_mean") or {}).get("ece"),
                    "ece_ts": ((test.get("table2") or {}).get("mc_mean") or {}).get("ece_ts"),
                    "temperature": None if math.isnan(t) else t,
                }
        except (ProjectError, ValueError, OSError, KeyError) as err:
            row["damaged"] = " ".join(str(err).split())
        rows.append(row)
    return sorted(rows, key=lambda r: (str(r.get("created", "")), r["name"]))
