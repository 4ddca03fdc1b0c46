"""Which classifiers a project holds and which one is active: HDF5 attributes only.

Torch-free (unlike :mod:`hemalens.engine.models`), so the GUI thread can ask cheaply.
:mod:`hemalens.engine.models.store` makes the same choice through these functions.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import h5py

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.store import attr_json, attr_text, open_project_h5

__all__ = ["active_model", "active_model_info", "model_info", "model_names", "require_model"]


def model_names(f: h5py.File) -> list[str]:
    """Return the names of the stored models (groups of ``/models`` with weights).

    Parameters
    ----------
    f : h5py.File
        An open project file.

    Returns
    -------
    list of str
        In HDF5 order; empty when there are none.
    """
    g = f.get("models")
    if not isinstance(g, h5py.Group):
        return []
    return [k for k, v in g.items() if isinstance(v, h5py.Group) and "weights" in v]


def active_model(f: h5py.File) -> str | None:
    """Return the active model: the ``/models`` attribute ``active``, else the newest.

    Parameters
    ----------
    f : h5py.File
        An open project file.

    Returns
    -------
    str or None
        Its name, or None when the project has no model.
    """
    names = model_names(f)
    if not names:
        return None
    act = attr_text(f["models"].attrs.get("active"))
    if act in names:
        return act
    # no (valid) active mark: the most recently created model (ISO stamps sort as text)
    return max(names, key=lambda n: attr_text(f["models"][n].attrs.get("created")) or "")


def require_model(f: h5py.File, path: str | PathLike[str], name: str) -> None:
    """Raise unless the project holds a model called ``name``.

    Parameters
    ----------
    f : h5py.File
        The open project.
    path : str or PathLike
        Its path, for the message.
    name : str
        The model asked for.

    Raises
    ------
    ProjectError
        No model at all (with a hint to train one), or none of that name.
    """
    names = model_names(f)
    if not names:
        raise ProjectError(path, "has no trained model (train one first, e.g. `hemalens train`)")
    if name not in names:
        raise ProjectError(path, f"no model named {name!r}; models: {sorted(names)}")


def _info(f: h5py.File, name: str) -> dict[str, Any]:
    attrs = f["models"][name].attrs
    return {"name": name, "created": attr_text(attrs.get("created")) or "",
            "class_names": [str(c) for c in attr_json(attrs, "class_names_json", [])]}


def model_info(project_path: str | PathLike[str], name: str | None = None) -> dict[str, Any]:
    """Name, ``created`` stamp and class names of a model, without loading its weights.

    Parameters
    ----------
    project_path : str or PathLike
        The project file.
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
    with open_project_h5(project_path, "r") as f:
        chosen = (active_model(f) or "") if name is None else name
        require_model(f, Path(project_path), chosen)
        return _info(f, chosen)


def active_model_info(project_path: str | PathLike[str]) -> dict[str, Any] | None:
    """Name, ``created`` stamp and class names of the active model, without loading it.

    Parameters
    ----------
    project_path : str or PathLike
        The project file.

    Returns
    -------
    dict or None
        ``{"name", "created", "class_names"}``, or None when the project has no model.

    Raises
    ------
    ProjectError
        Not a readable project.
    """
    with open_project_h5(project_path, "r") as f:
        name = active_model(f)
        if name is None:
            return None
        return _info(f, name)
