"""Score a segmented project against the simulator's ground truth (``truth.csv``).

Used by the acceptance tests and benchmarks: every claim about segmentation quality is
measured here, against truth the segmentation never saw. Objects are paired within a
run and frame by nearest centroid (at most ``match_px`` apart); runs are matched through
the input table's ``run`` column, so phase and hologram projects score alike.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from hemalens.engine.project import Project

LEUKOCYTES = frozenset({"lymphocyte", "monocyte", "neutrophil", "eosinophil"})
JUNK = frozenset({"aggregate", "thrombocyte", "debris"})


def _flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def read_truth(path: str | Path) -> list[dict[str, str]]:
    """Read ``truth.csv`` as a list of rows (strings)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def match_truth(
    truth: list[dict[str, str]], project: Project, match_px: float = 3.0
) -> list[int | None]:
    """Pair each truth row with the nearest project object of its run and frame.

    Parameters
    ----------
    truth : list of dict
        Rows of ``truth.csv`` (see :func:`read_truth`).
    project : Project
        An open project segmented from the same simulation.
    match_px : float
        Largest centroid distance of a match, in frame pixels.

    Returns
    -------
    list of int or None
        Per truth row, the matched cell row, or None.
    """
    cells = project.cells
    runs = np.asarray([str(r) for r in project.inputs["run"]], dtype=object)
    run_of = runs[cells["input_id"]]
    frames = np.asarray(cells["frame"])
    order = np.lexsort((frames, run_of.astype(str)))
    keys = list(zip(run_of[order].tolist(), frames[order].tolist(), strict=True))
    groups: dict[tuple[str, int], np.ndarray] = {}
    start = 0
    for k in range(1, len(keys) + 1):
        if k == len(keys) or keys[k] != keys[start]:
            groups[keys[start]] = order[start:k]
            start = k

    xy = np.c_[cells["x"], cells["y"]]
    trees = {key: cKDTree(xy[idx]) for key, idx in groups.items()}
    matched: list[int | None] = []
    for row in truth:
        key = (row["run"], int(row["frame"]))
        tree = trees.get(key)
        if tree is None:
            matched.append(None)
            continue
        dist, j = tree.query([float(row["x"]), float(row["y"])])
        matched.append(int(groups[key][j]) if dist <= match_px else None)
    return matched


def true_classes(
    truth_csv: str | Path, project_path: str | Path, match_px: float = 3.0
) -> np.ndarray:
    """Return the simulated true class of every project object ('' where unmatched).

    Parameters
    ----------
    truth_csv : str or Path
        The simulator's ``truth.csv``.
    project_path : str or Path
        A project segmented from that simulation.
    match_px : float
        Largest centroid distance of a match, in frame pixels.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` object array of class names: a leukocyte class, ``erythrocyte``,
        ``mixed`` (aggregates) or ``''`` (debris, or no truth object nearby). Defocused
        cells keep their class.
    """
    truth = read_truth(truth_csv)
    with Project.open(project_path) as project:
        matched = match_truth(truth, project, match_px)
        out = np.full(project.n_cells, "", dtype=object)
    for row, m in zip(truth, matched, strict=True):
        if m is not None:
            out[m] = row["true_class"] or ("erythrocyte" if row["kind"] == "erythrocyte" else "")
    return out


def score_segmentation(
    truth_csv: str | Path, project_path: str | Path, match_px: float = 3.0
) -> dict[str, Any]:
    """Compare a project's objects with the simulated truth.

    Parameters
    ----------
    truth_csv : str or Path
        The simulator's ``truth.csv``.
    project_path : str or Path
        A project segmented from that simulation.
    match_px : float
        Largest centroid distance of a match, in frame pixels.

    Returns
    -------
    dict
        ``recall``: share of in-focus, single leukocytes fully inside the frame that are
        found and pass QC; ``precision``: share of QC-passed objects that sit on a
        leukocyte (in focus or not) or an erythrocyte; ``median_rel_diameter_error`` over
        the recalled cells; ``junk_rejected``: share of detected aggregates, thrombocytes
        and debris that QC rejected; ``rejected_reasons`` of those; and the counts behind
        each figure.
    """
    truth = read_truth(truth_csv)
    with Project.open(project_path) as project:
        cells = project.cells
        matched = match_truth(truth, project, match_px)

    qc = np.asarray(cells["qc_pass"], bool)
    target = [
        (row, m) for row, m in zip(truth, matched, strict=True)
        if row["kind"] in LEUKOCYTES and _flag(row["in_focus"]) and not _flag(row["touches_border"])
    ]
    found = [(row, m) for row, m in target if m is not None and qc[m]]
    rel_err = [
        abs(float(cells["diameter_um"][m]) / float(row["diameter_um"]) - 1.0) for row, m in found
    ]
    allowed = {
        m for row, m in zip(truth, matched, strict=True)
        if m is not None and (row["kind"] in LEUKOCYTES or row["kind"] == "erythrocyte")
    }
    passed = np.flatnonzero(qc)
    pairs = list(zip(truth, matched, strict=True))
    junk = [m for row, m in pairs if row["kind"] in JUNK and m is not None]
    junk_rejected = [m for m in junk if not qc[m]]
    reasons: dict[str, int] = {}
    for m in junk_rejected:
        reason = cells["qc_reason"][m]
        name = reason.decode() if isinstance(reason, bytes) else str(reason)
        reasons[name] = reasons.get(name, 0) + 1
    return {
        "truth_objects": len(truth),
        "project_objects": int(len(qc)),
        "target_leukocytes": len(target),
        "recall": len(found) / len(target) if target else float("nan"),
        "qc_passed": int(len(passed)),
        "precision": float(np.mean([m in allowed for m in passed])) if len(passed) else np.nan,
        "median_rel_diameter_error": float(np.median(rel_err)) if rel_err else float("nan"),
        "junk_detected": len(junk),
        "junk_rejected": len(junk_rejected) / len(junk) if junk else float("nan"),
        "junk_rejected_reasons": dict(sorted(reasons.items())),
    }
