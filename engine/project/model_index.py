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
