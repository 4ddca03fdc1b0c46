"""``hemalens review``: mislabel queue, differential counts, OOD statistics, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.models.store import load_model
from hemalens.engine.project import Project
from hemalens.engine.review import (
    differential_counts,
    mislabel_queue,
    ood_sets,
    ood_statistics,
    read_predictions,
    write_report,
)
from hemalens.engine.segment import SegmentSettings

#: Without an OOD flag in the predictions (models older than the OOD detector), cells whose
#: calibrated confidence is below this are excluded from the differential as out of
#: distribution ("ood") rather than counted under a class they probably are not.
OOD_CONFIDENCE = 0.5
#: Included cells below this confidence are flagged for a person to look at.
REVIEW_CONFIDENCE = 0.8


def _samples(project: Project) -> np.ndarray:
    """One sample id per cell: the input's run, else its file."""
    runs = [str(r) for r in project.inputs["run"]]
    files = [str(f) for f in project.inputs["file"]]
    ids = np.asarray([r or f for r, f in zip(runs, files, strict=True)], dtype=object)
    return ids[project.cells["input_id"]]


def _pick_best(by_measure: dict[str, dict[str, np.ndarray]], halves: dict[str, np.ndarray],
               candidates: list[str], sets: list[str]) -> dict[str, Any]:
    """Choose measures on the selection half of every set, report them on the other half."""
    def auroc(m: str, name: str, half: int) -> float:
        ref = by_measure[m]["leukocyte"][halves["leukocyte"] == half]
        other = by_measure[m][name][halves[name] == half]
        return float(ood_statistics({"leukocyte": ref, name: other})["auroc"][name])

    sel = {m: {name: auroc(m, name, 0) for name in sets} for m in candidates}
    best = max(candidates, key=lambda m: min(sel[m].values()))
    per_set = {}
    for name in sets:
        b = max(candidates, key=lambda m: sel[m][name])  # noqa: B023
        per_set[name] = {"measure": b, "auroc": auroc(b, name, 1),
                         "auroc_selection_half": sel[b][name]}
    return {"best_measure": best,
            "best_measure_auroc": {name: auroc(best, name, 1) for name in sets},
            "best_per_set": per_set}


def ood_review(
    project_path: str | Path,
    *,
    model_name: str | None = None,
    n: int = 300,
    passes: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Confidence of the model on OOD sets vs on leukocytes, for every measure.

    The leukocyte reference is the model's test split when the model records one (cells
    it never trained on), else all QC-passed labelled cells; at most ``n`` of them. With
    a model that carries an OOD detector, ``ood_score`` is one more entry; its statistics
    are computed on ``-ood_score`` (higher = in distribution, like a confidence), so its
    AUROC reads like the measures'.

    The "best" measure is never chosen on the cells it is reported on: every set
    (leukocytes included) is split at random into two halves; the choice is made on the
    selection half and its AUROC reported on the other half (``"selection"`` says so).

    Returns
    -------
    dict
        ``{measure: ood_statistics(...)}`` over all cells of every set, plus
        ``"best_measure"`` (the candidate with the highest worst-case AUROC over every OOD
        set on the selection half), ``"best_measure_auroc"`` (its AUROC per set on the
        report half), ``"best_per_set"`` (``{set: {"measure", "auroc",
        "auroc_selection_half"}}``, ``auroc`` on the report half), ``"candidates"`` (the MC
        measures and ``ood_score``) and ``"selection"`` (a sentence).
    """
    from hemalens.engine.review.ood_detector import OODDetector
    from hemalens.engine.workflows.calibration import calibrated_measures, ood_scores

    model, meta = load_model(project_path, model_name)
    calibration = meta["extra"].get("calibration") or {}
    detector = OODDetector.from_model(meta)
    rng = np.random.default_rng(seed)
    with Project.open(project_path) as project:
        pool = meta["split"]["test"] if meta.get("split_ids") == "cell_id" else np.zeros(0, int)
        if pool.size == 0:
            pool = np.flatnonzero(project.cells["qc_pass"] & (project.cells["given_label"] >= 0))
        if pool.size == 0:
            raise ProjectError(project_path, "has no labelled, QC-passed cells to compare with")
        pick = np.sort(rng.choice(pool, size=min(n, pool.size), replace=False))
        sets = {"leukocyte": project.images(pick)}
        size = project.patch_shape[0]
        settings = SegmentSettings.from_dict(project.settings)
    # rendered and normalised with the project's own patch settings
    sets |= ood_sets(n, patch_size=size, seed=seed, settings=settings)
    by_measure: dict[str, dict[str, np.ndarray]] = {}
    for k, (name, images) in enumerate(sets.items()):
        checkpoint(progress)
        measures = calibrated_measures(model, images, calibration, passes=passes,
                                       seed=seed + k)
        for measure, values in measures.items():
            by_measure.setdefault(measure, {})[name] = values["confidence"]
        if detector is not None:
            score = ood_scores(model, detector, images, measures)
            by_measure.setdefault("ood_score", {})[name] = -score
        if progress is not None:
            progress.set_progress(k + 1, len(sets))
    out: dict[str, Any] = {m: ood_statistics(conf, reference="leukocyte")
                           for m, conf in by_measure.items()}
    if "ood_score" in out:
        out["ood_score"]["score"] = "-ood_score (higher = in distribution)"
    candidates = [m for m in by_measure if m.startswith("mc_") or m == "ood_score"]
    halves = {name: rng.permutation(np.arange(len(images)) % 2) for name, images in sets.items()}
    out |= _pick_best(by_measure, halves, candidates, [s for s in sets if s != "leukocyte"])
    out["candidates"] = candidates
    out["selection"] = ("best measures chosen on a random half of every set, AUROC reported "
                        f"on the other half (seed {seed})")
    return out


def review_project(
    project_path: str | Path,
    *,
    model_name: str | None = None,
    threshold: float = 0.95,
    with_ood: bool = True,
    ood_n: int = 300,
    passes: int = 100,
    report_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the review of a predicted project.

    Parameters
    ----------
    project_path : str or Path
        A project with predictions (``hemalens predict``).
    model_name : str, optional
        Whose predictions; the active model's when omitted.
    threshold : float
        Calibrated confidence at which a disagreement with the given label enters the
        mislabel queue.
    with_ood : bool
        Also run the OOD statistics (needs the model; takes MC passes over 5 sets).
    ood_n, passes : int
        Cells per OOD set, MC passes.
    report_dir : str or Path, optional
        Write an HTML report with figures there.
    progress : Progress, optional
        Progress of the OOD part.

    Returns
    -------
    dict
        ``{"model", "queue": [{"cell_id", "given", "predicted", "confidence"}],
        "differential": {sample: {class: {"percent", "ci_low", "ci_high", "n"}, ...}},
        "ood": {...}, "report"}``.
    """
    with Project.open(project_path) as project:
        found = read_predictions(project, model_name)
        if found is None:
            raise ProjectError(project_path, "has no predictions: run `hemalens predict` first")
        columns, attrs = found
        classes = list(attrs.get("class_names") or project.classes)
        cells = project.cells
        given = np.asarray(cells["given_label"])
        pred = np.asarray(columns["predicted"])
        conf = np.asarray(columns["confidence"])
        qc = np.asarray(cells["qc_pass"], bool)
        # Given labels are codes into the project's classes, predictions into the model's:
        # compare by name.
        project_classes = list(project.classes)
        to_model = np.asarray([classes.index(c) if c in classes else -1
                               for c in project_classes] + [-1], dtype=np.int64)
        given_model = to_model[given]  # -1 (unlabelled) indexes the trailing -1
        queue = mislabel_queue(pred, conf, given_model, threshold=threshold, eligible=qc)
        in_queue = np.zeros(len(pred), bool)
        in_queue[queue] = True
        # the model's OOD flag when its predictions carry one, else low confidence
        flag = columns.get("ood")
        ood = qc & (np.asarray(flag, bool) if flag is not None else (conf < OOD_CONFIDENCE))
        include = qc & ~ood
        flagged = in_queue | (include & (conf < REVIEW_CONFIDENCE))
        differential = differential_counts(
            pred, _samples(project), classes, include=include, flagged=flagged,
            excluded_reasons={"qc": ~qc, "ood": ood},
        )
        names = np.asarray([*project_classes, ""], dtype=object)  # code -1 -> ""
        queue_rows = [
            {"cell_id": int(cells["cell_id"][i]), "given": str(names[given[i]]),
             "predicted": classes[int(pred[i])], "confidence": round(float(conf[i]), 4)}
            for i in queue
        ]
    review: dict[str, Any] = {
        "model": attrs.get("model"),
        "measure": attrs.get("measure"),
        "threshold": threshold,
        "queue": queue_rows,
        "differential": differential,
        "ood": ood_review(project_path, model_name=model_name, n=ood_n, passes=passes,
                          progress=progress) if with_ood else {},
    }
    if report_dir is not None:
        review["report"] = str(write_report(report_dir, review, title=f"HemaLens review — "
                                            f"{Path(project_path).name}"))
    return review
