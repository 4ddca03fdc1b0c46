"""What a project offers for training: QC-passed cells with a current given label."""

from __future__ import annotations

from os import PathLike

import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.store import Project

__all__ = ["training_data"]


def training_data(
    project: Project | str | PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Collect the training set of a project.

    Uses cells that passed QC and carry a given label (``given_label >= 0``): the
    *current* label, so relabels (:func:`hemalens.engine.project.relabel`) count and
    original labels do not. Classes that no usable cell carries are left out, so the
    codes run over ``0..K-1``; when every project class is used they equal the project's
    codes.

    Parameters
    ----------
    project : Project, str or PathLike
        An open project (re-read it with :meth:`Project.reload` after a relabel), or its
        path.

    Returns
    -------
    images : numpy.ndarray
        ``(N, S, S)`` float32 patches in [0, 1].
    labels : numpy.ndarray
        ``(N,)`` int64 codes into ``class_names``.
    cell_ids : numpy.ndarray
        ``(N,)`` int64 cell ids (rows of the cell table).
    donors : numpy.ndarray
        ``(N,)`` str donor of each cell from the input table (``""`` when unknown).
    class_names : list of str
        Name of each code.

    Raises
    ------
    ProjectError
        Not a phase project, or no QC-passed cell has a label.
    """
    if not isinstance(project, Project):
        with Project.open(project) as p:
            return training_data(p)
    if project.patch_kind != "phase":
        raise ProjectError(
            project.path, f"training needs phase patches; this project holds {project.patch_kind}"
        )
    cells = project.cells
    given = np.asarray(cells["given_label"], np.int64)
    use = np.asarray(cells["qc_pass"], bool) & (given >= 0)
    cell_ids = np.flatnonzero(use).astype(np.int64)
    if cell_ids.size == 0:
        reason = "has no cells" if project.n_cells == 0 else "has no QC-passed cell with a label"
        raise ProjectError(project.path, f"{reason}; nothing to train on")
    codes = given[cell_ids]
    used = np.unique(codes)
    class_names = [str(project.classes[c]) for c in used]
    labels = np.searchsorted(used, codes).astype(np.int64)
    input_id = np.asarray(cells["input_id"], np.int64)[cell_ids]
    donor_col = project.inputs.get("donor")
    if donor_col is None or len(donor_col) == 0:
        donors = np.full(cell_ids.size, "", dtype=str)
    else:
        table = np.append(np.asarray(donor_col, dtype=str), "")  # input_id -1 -> ""
        donors = table[np.where(input_id >= 0, input_id, -1)]
    images = project.images(cell_ids).astype(np.float32, copy=False)
    return images, labels, cell_ids, donors, class_names
