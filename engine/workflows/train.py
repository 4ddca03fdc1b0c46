"""``hemalens train``: train a classifier on a project's labelled cells, calibrate, store it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Progress, SubProgress
from hemalens.engine.models.store import save_model
from hemalens.engine.project import Project
from hemalens.engine.train import TrainConfig, stable_split, train_classifier, training_data
from hemalens.engine.workflows.calibration import fit_calibration, fit_ood
from hemalens.engine.workflows.metrics import split_metrics


def train_project(
    project_path: str | Path,
    config: TrainConfig,
    *,
    name: str | None = None,
    passes: int = 100,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, calibrate on the validation split, score the test split, store the model.

    The model is stored with its out-of-distribution detector
    (:func:`~hemalens.engine.workflows.calibration.fit_ood`: feature statistics of the
    training split, threshold on the validation split).

    Uses the QC-passed cells with a current given label (relabels honoured, excluded cells
    left out), split with :func:`~hemalens.engine.train.stable_split` (a relabelled test
    cell stays in test). The project is only written at the end, atomically: an
    interrupted training leaves it as it was.

    Parameters
    ----------
    project_path : str or Path
        The project.
    config : TrainConfig
        Architecture, dropout, epochs, split, seed, device.
    name : str, optional
        Model name; ``<arch>-<UTC timestamp>`` when omitted.
    passes : int
        MC-dropout passes used for calibration and the test scores.
    progress : Progress, optional
        Progress over training and calibration; cancelling writes nothing.

    Returns
    -------
    dict
        ``{"model", "arch", "cells", "classes", "split": {part: n}, "best_epoch",
        "epochs_run", "val_macro_f1", "test": {...}, "calibration": {...}, "ood":
        {"threshold", "keep", "measure"}, "seconds",
        "device"}``.
    """
    with Project.open(project_path) as project:
        images, labels, cell_ids, donors, classes = training_data(project)
        try:
            split = stable_split(project, cell_ids, seed=config.seed,
                                 fractions=config.fractions, test_donor=config.test_donor)
        except ValueError as err:
            raise ProjectError(project_path, str(err)) from err
    try:
        result = train_classifier(
            images, labels, len(classes), config, donors=donors, split=split,
            progress=SubProgress(progress, 0, 0.8),
        )
    except ValueError as err:  # unusable data or split: the user's to fix, in one line
        raise ProjectError(project_path, str(err)) from err
    val, test = result.split["val"], result.split["test"]
    if progress is not None:
        progress.set_status("Calibrating on the validation split")
    calibration = fit_calibration(
        result.model, images[val], labels[val], passes=passes, seed=config.seed,
        progress=SubProgress(progress, 0.8, 0.1),
    )
    if progress is not None:
        progress.set_status("Fitting the out-of-distribution detector")
    train = result.split["train"]
    try:
        detector = fit_ood(result.model, images[train], labels[train], images[val],
                           calibration, passes=passes, seed=config.seed)
        ood_arrays, ood_settings = detector.to_model()
    except ValueError:  # too few cells (a class absent from training): no detector
        ood_arrays, ood_settings = {}, None
    test_scores = (
        split_metrics(result.model, images[test], labels[test], calibration, passes=passes,
                      seed=config.seed)
        if len(test) else {}
    )
    name = name or f"{config.arch}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    save_model(
        project_path, name, result, classes,
        temperature=calibration["temperature"],
        extra={"calibration": calibration, "test": test_scores,
               **({"ood": ood_settings} if ood_settings else {})},
        cell_ids=cell_ids, arrays=ood_arrays,
    )
    return {
        "model": name,
        "arch": config.arch,
        "cells": int(len(labels)),
        "classes": {c: int(np.sum(labels == i)) for i, c in enumerate(classes)},
        "split": {k: int(len(v)) for k, v in result.split.items()},
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_macro_f1": round(float(result.val_macro_f1), 4),
        "test": test_scores,
        "calibration": {k: v for k, v in calibration.items() if k != "std_map"},
        "ood": ({k: ood_settings[k] for k in ("threshold", "keep", "measure")}
                if ood_settings else None),
        "seconds": round(result.seconds, 2),
        "device": result.device,
    }
