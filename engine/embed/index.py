"""Which embedding models a project holds, read with h5py alone (no torch).

The store (:mod:`~hemalens.engine.embed.store`) loads networks and needs torch; the GUI
lists the models on its own thread and must not import it. Both read the models'
metadata through :func:`embedding_meta` and list them through
:func:`list_embedding_models`.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import h5py

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.derived import item_names, read_item
from hemalens.engine.project.store import Project, attr_json, locate_project

__all__ = ["embedding_meta", "list_embedding_models"]


def embedding_meta(g: h5py.Group, name: str) -> dict[str, Any]:
    """Return a stored embedding model's metadata (its JSON attributes, decoded).

    Parameters
    ----------
    g : h5py.Group
        The model's file or group.
    name : str
        The model's name.

    Returns
    -------
    dict
        ``name``, ``spec``, ``config``, ``metrics``, ``class_names``, ``history``,
        ``created``, ``hemalens_version``.
    """
    a = g.attrs
    return {
        "name": name,
        "spec": attr_json(a, "spec_json", {}) or {},
        "config": attr_json(a, "config_json", {}) or {},
        "metrics": attr_json(a, "metrics_json", {}) or {},
        "class_names": attr_json(a, "class_names_json", []),
        "history": attr_json(a, "history_json", []),
        "created": str(a.get("created", "")),
        "hemalens_version": str(a.get("hemalens_version", "")),
    }


def list_embedding_models(project: str | PathLike[str] | Project, *,
                          skip_damaged: bool = False) -> list[dict[str, Any]]:
    """Summarise the stored embedding models, oldest first.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.
    skip_damaged : bool
        Leave out a model whose metadata cannot be read (the GUI's list) instead of
        raising.

    Returns
    -------
    list of dict
        One per model: ``name``, ``backbone``, ``dim``, ``input_size``, ``loss``,
        ``types``, ``alpha``, ``class_weights``, ``epochs``, ``pli`` (trained with
        manual targets), ``mean_f1``, ``std_f1``, ``folds`` (per-fold scores),
        ``created``. Empty when there is none.

    Raises
    ------
    ProjectError
        Not a readable project (or a damaged model, unless ``skip_damaged``).
    """
    paths = locate_project(project)
    rows = []
    for n in item_names(paths, "embeddings"):
        try:
            with read_item(paths, "embeddings", n) as g:
                if g is None:
                    continue
                m = embedding_meta(g, n)
        except (ProjectError, ValueError):
            if skip_damaged:
                continue
            raise
        spec, cfg, met = m["spec"], m["config"], m["metrics"]
        rows.append({
            "name": n,
            "backbone": spec.get("backbone", (cfg.get("spec") or {}).get("backbone")),
            "dim": spec.get("dim"), "input_size": spec.get("input_size"),
            "loss": cfg.get("loss"), "types": cfg.get("types"), "alpha": cfg.get("alpha"),
            "class_weights": cfg.get("class_weights"), "epochs": cfg.get("epochs"),
            "pli": bool(cfg.get("pli_targets", False)),
            "mean_f1": met.get("mean_f1"), "std_f1": met.get("std_f1"),
            "folds": met.get("folds", []), "created": m["created"],
        })
    return sorted(rows, key=lambda r: (r["created"], r["name"]))
