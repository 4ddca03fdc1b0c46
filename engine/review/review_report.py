"""The report of a review: what ``File > Export report`` writes from a review session.

It gathers, from the session as it is now: the differential count per sample with its
95 % intervals and exclusions, the sign-offs, every edit of the reviewers (a summary per
reviewer and command, all rows in ``changes.csv``), the model and its calibration on its
test split (ECE/MCE before and after temperature scaling, reliability diagrams), and the
last out-of-distribution check when one was run. It writes ``report.html`` with its
figures, ``differential.csv`` and ``changes.csv``; the window adds ``report.pdf``.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.project.annotations import DECISIONS
from hemalens.engine.project.atomic import atomic_write
from hemalens.engine.review.report import write_report

__all__ = ["report_content", "write_review_report"]


def report_content(session: Any, *, ood: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect what the report shows (fast; safe to run in the window's thread).

    Parameters
    ----------
    session : ReviewSession
        The open session.
    ood : dict, optional
        A result of ``workflows.review.ood_review`` to include.

    Returns
    -------
    dict
        The ``review`` mapping of :func:`~hemalens.engine.review.report.write_report`,
        plus ``"_changes_rows"`` and ``"_differential_rows"`` for the CSV files.
    """
    from hemalens.engine.project.model_index import model_names, model_split
    from hemalens.engine.review.calibration_view import calibration_summary

    s = session
    classes = list(s.classes)
    diff = s.differential()
    h = s.store.history()
    rows = []
    summary: dict[str, Counter] = {}
    for k in range(h["cell_id"].size):
        field, old, new = str(h["field"][k]), int(h["old"][k]), int(h["new"][k])
        if field == "label":
            def name(c: int) -> str:
                return classes[c] if 0 <= c < len(classes) else "none"
            change = f"label {name(old)} -> {name(new)}"
        else:
            change = f"{DECISIONS[old]} -> {DECISIONS[new]}"
        user, op = str(h["user"][k]), str(h["op"][k])
        summary.setdefault(user, Counter())[op] += 1
        rows.append({"time": str(h["time"][k]), "user": user, "op": op,
                     "cell_id": int(h["cell_id"][k]), "sample": str(s.samples[h["cell_id"][k]]),
                     "change": change, "reason": str(h["reason"][k])})
    review: dict[str, Any] = {
        "meta": {"project": str(s.project.path), "reviewer": s.user,
                 "model": s.model or "none", "cells passed QC": int(s.qc.sum()),
                 "samples": len(s.sample_list), "signed off": len(s.signed)},
        "differential": diff,
        "class_names": classes,
        "signoffs": s.store.signoffs(),
        "changes": {"summary": {u: dict(c) for u, c in summary.items()}, "rows": rows,
                    "csv": "changes.csv"},
        "_changes_rows": rows,
    }
    found = s.prediction_columns()
    if found is not None and s.model in model_names(s.project):
        cols, attrs = found
        names = list(attrs.get("class_names") or classes)
        to_model = np.asarray([names.index(c) if c in names else -1 for c in classes] + [-1])
        labels = to_model[np.asarray(s.labels, np.int64)]
        split = model_split(s.project, s.model)
        cells = split["test"] if split["test"].size else np.flatnonzero(s.qc)
        cal = calibration_summary(cols, labels, cells, bootstrap=0)
        review["calibration"] = {
            fam: {k: v for k, v in e.items() if k.startswith(("ece", "mce"))}
            for fam, e in cal["families"].items()}
        review["reliability"] = {
            f"{fam} {when}": e[key] for fam, e in cal["families"].items()
            for key, when in (("before", "before"), ("after", "calibrated"))
            if e.get(key) is not None and fam == "MC mean"}
        t = split["calibration"].get("temperature")
        review["meta"]["temperature"] = round(t, 3) if isinstance(t, float) and \
            math.isfinite(t) else t
        review["meta"]["calibration cells (test split)"] = cal["n"]
    if ood:
        review["ood"] = {k: v for k, v in ood.items() if isinstance(v, dict) and "auroc" in v}
    diff_rows = []
    for sample, row in diff.items():
        for c in classes:
            if c in row:
                diff_rows.append({"sample": sample, "class": c, **row[c],
                                  "counted": row["_total"]})
        for reason, n in row.get("_excluded", {}).items():
            diff_rows.append({"sample": sample, "class": f"(excluded: {reason})", "n": n,
                              "percent": "", "ci_low": "", "ci_high": "",
                              "counted": row["_total"]})
    review["_differential_rows"] = diff_rows
    return review


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def write_review_report(out_dir: str | PathLike[str], content: dict[str, Any], *,
                        title: str) -> dict[str, Path]:
    """Write the report files from :func:`report_content` (figures take a second or two).

    Returns
    -------
    dict of str to pathlib.Path
        ``html``, ``differential_csv``, ``changes_csv``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    review = {k: v for k, v in content.items() if not k.startswith("_")}
    html = write_report(out, review, title=title)
    diff_csv = out / "differential.csv"
    _write_csv(diff_csv, content["_differential_rows"],
               ["sample", "class", "n", "percent", "ci_low", "ci_high", "counted"])
    changes_csv = out / "changes.csv"
    _write_csv(changes_csv, content["_changes_rows"],
               ["time", "user", "op", "cell_id", "sample", "change", "reason"])
    return {"html": html, "differential_csv": diff_csv, "changes_csv": changes_csv}
