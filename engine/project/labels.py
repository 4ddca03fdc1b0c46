"""The one function that changes cell labels, and the audit trail it keeps.

Every label change in HemaLens goes through :func:`relabel` (the review session calls the
same annotation-store command): it records the new labels, one history row per changed
cell (cell, old, new, time, user, reason) and the review decision, in one SQLite
transaction that is on disk when the call returns. Its cost is the rows it writes,
whatever the size of the project (``benchmarks/bench_annotations.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from os import PathLike
from typing import Any

import numpy as np

from hemalens.engine.project.annotations import DECISIONS, AnnotationStore
from hemalens.engine.project.store import Project, locate_project, open_cells_h5

__all__ = ["relabel", "writable_store"]


@contextlib.contextmanager
def writable_store(project: str | PathLike[str] | Project) -> Iterator[AnnotationStore]:
    """Yield an annotation store that accepts edits (the project's own when it can).

    Parameters
    ----------
    project : str, PathLike or Project
        The project.

    Raises
    ------
    ProjectError
        The project cannot be read, or its folder cannot be written (read-only).
    """
    if isinstance(project, Project) and project.annotations is not None and (
        not project.annotations.read_only
    ):
        yield project.annotations
        return
    paths = locate_project(project)
    with open_cells_h5(paths.root) as f:
        original = np.asarray(f["cells/original_label"][()], np.int16)
    marker = json.loads(paths.marker.read_text(encoding="utf-8"))
    store = AnnotationStore.open(paths.annotations, original,
                                 project_id=marker.get("project_id") or None)
    try:
        yield store
    finally:
        store.close()


def relabel(
    project: str | PathLike[str] | Project,
    cell_ids: Any,
    new_label: str | None,
    *,
    user: str,
    reason: str = "",
    when: datetime | None = None,
) -> int:
    """Set the given label of cells, record the change and the decision, durably.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.
    cell_ids : int or array_like of int
        Cells to relabel (repeats count once).
    new_label : str or None
        Class name (added to the classes if new), or None to remove the label.
    user : str
        Who made the change (non-empty).
    reason : str
        Why, free text (e.g. ``"review queue"``).
    when : datetime, optional
        Time recorded in the history (default now; naive times are local).

    Returns
    -------
    int
        Number of cells whose label actually changed (one history row each). Cells that
        already had the label are recorded as confirmed.

    Raises
    ------
    ValueError
        Unknown cell ids, non-integer ids, empty user or class name; nothing is written.
    ProjectError
        Not a readable project, read-only, or the disk is full; nothing is written.
    """
    user = str(user).strip()
    if not user:
        raise ValueError("relabel needs the user's name")
    if new_label is not None and not str(new_label).strip():
        raise ValueError("empty class name (use None to remove a label)")
    with writable_store(project) as store:
        kwargs: dict[str, Any] = (
            {"labels": -1} if new_label is None else {"label_name": str(new_label).strip()}
        )
        result = store.apply("relabel", cell_ids, user=user, decision="relabelled",
                             reason=str(reason), when=when, **kwargs)
    return int(np.count_nonzero(result.decisions == DECISIONS.index("relabelled")))
