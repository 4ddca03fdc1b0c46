"""What a project offers for training: QC-passed cells with a current given label."""

from __future__ import annotations

from os import PathLike

import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.annotations import DECISIONS
from hemalens.engine.project.store import Project
from hemalens.engine.train.splits import check_split, stable_parts

__all__ = ["stable_split", "training_data"]


def training_data(
    project: Project | str | PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Collect the training set of a project.

    Uses cells that passed QC, carry a given label (``given_label >= 0``) and that the
    reviewer did not exclude ("not classed"): the *current* label, so relabels count and
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
    excluded = project.decisions() == DECISIONS.index("excluded")
    use = np.asarray(cells["qc_pass"], bool) & (given >= 0) & ~excluded
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


def stable_split(
    project: Project,
    cell_ids: np.ndarray,
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    test_donor: str | None = None,
) -> dict[str, np.ndarray]:
    """Split training rows into train / validation / test, stably under review edits.

    The parts are drawn over every QC-passed cell of the project, stratified by the label
    at import (``original_label``; unlabelled cells are a stratum of their own), with
    :func:`~hemalens.engine.train.splits.stable_parts`: the imported data never changes,
    so neither does the part of a cell - relabelling, excluding or labelling cells only
    changes which cells train, never which part a cell is in.

    Parameters
    ----------
    project : Project
        The open project.
    cell_ids : numpy.ndarray
        The training rows' cell ids (from :func:`training_data`).
    seed : int
        Seed.
    fractions : tuple of float
        Train, validation and test shares.
    test_donor : str, optional
        Hold this donor out as the test set.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"train", "val", "test"}``: row indices into ``cell_ids``.

    Raises
    ------
    ValueError
        Bad fractions or donor, or empty train/validation parts.
    """
    qc = np.flatnonzero(np.asarray(project.cells["qc_pass"], bool))
    strata = np.asarray(project.cells["original_label"], np.int64)[qc]
    donors = None
    if test_donor is not None:
        input_id = np.asarray(project.cells["input_id"], np.int64)[qc]
        table = np.append(np.asarray(project.inputs.get("donor", []), dtype=str), "")
        donors = table[np.where(input_id >= 0, input_id, -1)]
    parts = np.full(project.n_cells, -1, np.int8)
    parts[qc] = stable_parts(strata, seed=seed, fractions=fractions, donors=donors,
                             test_donor=test_donor)
    mine = parts[np.asarray(cell_ids, np.int64)]
    split = {name: np.flatnonzero(mine == k) for k, name in enumerate(("train", "val", "test"))}
    return check_split(split, len(cell_ids))
