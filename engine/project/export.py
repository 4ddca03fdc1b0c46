"""Project summaries and CSV export of the cell table."""

from __future__ import annotations

import csv
import os
from collections import Counter
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.annotations import DECISIONS
from hemalens.engine.project.atomic import atomic_write
from hemalens.engine.project.derived import item_names
from hemalens.engine.project.model_index import active_model, model_names
from hemalens.engine.project.store import Project, locate_project

__all__ = ["CSV_LEAD_COLUMNS", "export_cells_csv", "project_info"]

#: First CSV columns, in this order; all other cell columns follow.
CSV_LEAD_COLUMNS = (
    "cell_id",
    "file",
    "frame",
    "x",
    "y",
    "diameter_um",
    "circularity",
    "area_um2",
    "optical_volume_um3",
    "qc_pass",
    "qc_reason",
    "given_label",
)
_LABEL_COLUMNS = ("given_label", "original_label")


def project_info(path: str | PathLike[str]) -> dict[str, Any]:
    """Summarise a project (what ``hemalens info`` prints).

    Parameters
    ----------
    path : str or PathLike
        The project file.

    Returns
    -------
    dict
        JSON-ready: ``project`` (path), ``schema_version``, ``patch_kind``, ``patch_shape``,
        ``objects`` (all, rejected included), ``cells`` (QC passed), ``rejected``
        ({qc reason: n}), ``inputs``,
        ``failed_inputs``, ``classes`` ({name: n cells with that given label}, all
        classes), ``labelled``, ``history_rows``, ``size_bytes``, ``created``, ``modified``,
        ``hemalens_version``, ``models`` (names), ``active_model``, ``predictions`` (models
        with predictions), ``explanations`` ({"model/method": cells cached}),
        ``embeddings`` (embedding model names).

    Raises
    ------
    ProjectError
        Not a readable project.
    """
    root = locate_project(path).root
    stored = _stored_results(root)
    with Project.open(root) as p:
        c = p.cells
        qc = c["qc_pass"].astype(bool)
        rejected = c["qc_reason"][~qc]
        reasons = Counter(r.decode("utf-8", "replace") or "unspecified" for r in rejected)
        given = c["given_label"]
        counts = np.bincount(given[given >= 0], minlength=len(p.classes))
        status = p.inputs.get("status", np.zeros(0, str))
        decisions = np.bincount(p.decisions(), minlength=len(DECISIONS))
        return {
            "project": str(root),
            "schema_version": p.schema_version,
            "patch_kind": p.patch_kind,
            "patch_shape": list(p.patch_shape),
            # same words as `hemalens segment`: objects found, cells = those passing QC
            "objects": p.n_cells,
            "cells": int(qc.sum()),
            "rejected": dict(sorted(reasons.items())),
            "inputs": int(len(status)),
            "failed_inputs": int(np.sum(status == "failed")),
            "classes": {name: int(n) for name, n in zip(p.classes, counts, strict=True)},
            "labelled": int(np.sum(given >= 0)),
            "history_rows": p.history_rows,
            "decisions": {d: int(n) for d, n in zip(DECISIONS, decisions, strict=True)},
            "signed_off": sorted(p.annotations.signed_samples()) if p.annotations else [],
            "size_bytes": _folder_size(root),
            "created": p.created,
            "modified": p.modified,
            "hemalens_version": p.hemalens_version,
            "read_only": p.read_only,
            **stored,
        }


def _folder_size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += (Path(folder) / name).stat().st_size
            except OSError:
                pass  # removed meanwhile (a writer's temporary file)
    return total


def _stored_results(root: Path) -> dict[str, Any]:
    """Summarise what later steps stored: models, predictions, explanations, embeddings."""
    from hemalens.engine.explain.store import cached_counts  # explain imports project

    return {
        "models": model_names(root),
        "active_model": active_model(root),
        "predictions": item_names(root, "predictions"),
        "explanations": cached_counts(root),
        "embeddings": item_names(root, "embeddings"),
    }


def _as_text(values: np.ndarray) -> list[str]:
    """Format one column for CSV: shortest round-trip numbers, NaN as empty, true/false."""
    k = values.dtype.kind
    if k == "b":
        return np.where(values, "true", "false").tolist()
    if k == "S":
        return np.char.decode(values, "utf-8", "replace").tolist()
    if k == "f":
        text = values.astype(str)  # numpy prints the shortest repr that round-trips the dtype
        text[np.isnan(values)] = ""
        return text.tolist()
    return values.astype(str).tolist()


def _prediction_columns(p: Project) -> dict[str, list[str]]:
    """CSV columns of the default model's predictions (none when the project has none)."""
    from hemalens.engine.review.predictions import read_predictions  # review imports project

    found = read_predictions(p)
    if found is None:
        return {}
    cols, attrs = found
    names = [str(c) for c in attrs.get("class_names") or p.classes]
    out: dict[str, list[str]] = {}
    if "predicted" in cols:
        codes = cols["predicted"].astype(np.int64)
        codes = np.where((codes >= 0) & (codes < len(names)), codes, -1)
        out["predicted_label"] = np.array([*names, ""], dtype=str)[codes].tolist()
    if "confidence" in cols:
        out["confidence"] = _as_text(cols["confidence"])
    if "ood_score" in cols:
        out["ood_score"] = _as_text(cols["ood_score"])
    if "ood" in cols:
        out["ood"] = _as_text(np.asarray(cols["ood"]).astype(bool))
    probs = cols.get("probs")
    if probs is not None and probs.ndim == 2 and probs.shape[1] == len(names):
        for k, name in enumerate(names):
            out[f"prob_{name}"] = _as_text(probs[:, k])
    return out


def check_csv_output(project: Path, out_csv: Path, force: bool) -> None:
    """Refuse a CSV destination that would overwrite something that is not an export.

    The project itself (or a file in it) is never a destination; an existing file is
    replaced only when it is an earlier ``hemalens export`` (its header starts with
    ``cell_id,``), or with ``force``.

    Raises
    ------
    ProjectError
        Naming the destination.
    """
    try:
        dest = out_csv.resolve(strict=False)
        root = project.resolve(strict=False)
    except (OSError, RuntimeError) as err:
        raise ProjectError(out_csv, f"cannot resolve the path ({err})") from err
    if dest == root or root in dest.parents:
        raise ProjectError(out_csv, "is the project itself; choose a .csv file outside it")
    if out_csv.is_dir():
        raise ProjectError(out_csv, "is a folder; give a .csv file name")
    if out_csv.exists() and not force:
        try:
            with open(out_csv, "rb") as fh:
                head = fh.read(8)
        except OSError:
            head = b""
        if head != b"cell_id,":
            raise ProjectError(out_csv, "exists and is not a HemaLens export; use --force to "
                                        "replace it")


def export_cells_csv(path: str | PathLike[str], out_csv: str | PathLike[str], *,
                     force: bool = False) -> int:
    """Write the cell table of a project as CSV, one row per object (atomically).

    Columns: :data:`CSV_LEAD_COLUMNS` first (``file`` as the input was named,
    ``given_label`` as a class name, ``qc_pass`` as true/false, NaN as empty), then every
    other cell column (``original_label`` also as a class name, extras as numbers). When
    the project holds predictions (of the active model, else the latest), three more
    kinds of columns close the row: ``predicted_label`` (class name, empty when none),
    ``confidence``, ``ood_score`` and ``ood`` (true/false; when the model has an OOD detector)
    and one ``prob_<class>`` per class (``probs``, temperature-scaled).

    Parameters
    ----------
    path : str or PathLike
        The project file.
    out_csv : str or PathLike
        Destination; an existing export is replaced only when the export succeeds. Any
        other existing file only with ``force``; the project itself never.
    force : bool
        Replace an existing file that is not an earlier export.

    Returns
    -------
    int
        Rows written (cells).

    Raises
    ------
    ProjectError
        The project is not readable, the destination is refused, or the CSV cannot be
        written.
    """
    check_csv_output(locate_project(path).root, Path(out_csv), force)
    with Project.open(path) as p:
        c = p.cells
        files = np.array([*p.inputs.get("file", np.zeros(0, str)).tolist(), ""], dtype=str)
        input_id = c["input_id"].astype(np.intp)
        if input_id.size and input_id.max() >= len(files) - 1:
            input_id = np.where(input_id >= len(files) - 1, -1, input_id)  # dangling -> ""
        columns: dict[str, list[str]] = {}
        for name in (*CSV_LEAD_COLUMNS, *(k for k in c if k not in CSV_LEAD_COLUMNS)):
            if name == "file":
                columns[name] = files[input_id].tolist()  # -1 picks the trailing ""
            elif name in _LABEL_COLUMNS:
                columns[name] = p.label_names(c[name]).tolist()
            else:
                columns[name] = _as_text(c[name])
        columns.update(_prediction_columns(p))
        n = p.n_cells

    def write(tmp: Path) -> int:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            w.writerows(zip(*columns.values(), strict=True))
        return n

    return atomic_write(out_csv, write)
