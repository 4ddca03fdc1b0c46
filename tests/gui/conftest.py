"""GUI test set-up: offscreen Qt, no modal dialogs, no leaked thread-pool work, small projects."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QStandardPaths, QThreadPool  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

CLASSES = ["neutrophil", "eosinophil", "monocyte", "lymphocyte"]
PATCH = 50


@pytest.fixture(scope="session", autouse=True)
def _gui_session(qapp, tmp_path_factory):
    """Name the app like the real one, configure pyqtgraph, keep data paths and settings
    out of $HOME."""
    from PySide6.QtCore import QSettings

    from hemalens.gui.app import create_app

    QStandardPaths.setTestModeEnabled(True)
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                      str(tmp_path_factory.mktemp("settings")))
    create_app()
    yield qapp


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Every test starts with empty settings (window layout, recent projects, reviewer)."""
    from PySide6.QtCore import QSettings

    QSettings().clear()
    yield


@pytest.fixture(autouse=True)
def _no_leaked_runnables():
    """Fail a test that leaves thread-pool runnables alive (napari's conftest idea)."""
    yield
    pool = QThreadPool.globalInstance()
    finished = pool.waitForDone(5000)
    assert finished and pool.activeThreadCount() == 0, "test left QThreadPool runnables alive"


@pytest.fixture(autouse=True)
def message_boxes(monkeypatch) -> list[tuple[str, str, str]]:
    """Record QMessageBox static calls instead of blocking on a modal dialog.

    Returns
    -------
    list of (kind, title, text)
        One entry per dialog the code under test tried to show.
    """
    calls: list[tuple[str, str, str]] = []

    def recorder(kind: str):
        def show(parent: Any, title: str, text: str, *args: Any, **kwargs: Any) -> Any:
            calls.append((kind, title, text))
            return QMessageBox.StandardButton.Ok

        return show

    for kind in ("critical", "warning", "information", "question", "about"):
        monkeypatch.setattr(QMessageBox, kind, staticmethod(recorder(kind)))
    return calls


def blob_patches(n: int, rng: np.random.Generator, size: int = PATCH) -> np.ndarray:
    """Smooth random blobs in [0, 1], one per patch (cheap stand-ins for cells)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy = rng.uniform(0.4, 0.6, n)[:, None, None] * size
    cx = rng.uniform(0.4, 0.6, n)[:, None, None] * size
    r = rng.uniform(0.12, 0.3, n)[:, None, None] * size
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    noisy = blob + rng.normal(0, 0.02, blob.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


def make_cells(n: int, rng: np.random.Generator, n_inputs: int = 2) -> dict[str, np.ndarray]:
    """A cell table with known values: every 10th cell QC-rejected, some unlabelled."""
    qc = np.ones(n, dtype=bool)
    qc[::10] = False
    reasons = np.where(qc, b"", np.where(np.arange(n) % 20 == 0, b"too_small", b"not_round"))
    labels = (np.arange(n) % len(CLASSES)).astype(np.int16)
    labels[7::25] = -1
    diameter = rng.uniform(5, 12, n).astype(np.float32)
    return {
        "input_id": (np.arange(n) % n_inputs).astype(np.int32),
        "frame": (np.arange(n) // 10).astype(np.int32),
        "object_id": (np.arange(n) % 10).astype(np.int32),
        "x": rng.uniform(0, 500, n).astype(np.float32),
        "y": rng.uniform(0, 500, n).astype(np.float32),
        "diameter_um": diameter,
        "area_um2": (np.pi * diameter**2 / 4).astype(np.float32),
        "circularity": rng.uniform(0.7, 1.0, n).astype(np.float32),
        "optical_volume_um3": rng.uniform(50, 300, n).astype(np.float32),
        "qc_pass": qc,
        "qc_reason": reasons.astype("S16"),
        "given_label": labels,
        "original_label": labels.copy(),
    }


def write_project(path: Path, n: int = 300, kind: str = "phase", seed: int = 0) -> Path:
    """Write a small project with ProjectWriter (phase with raw patches, or rgb).

    Whatever is at ``path`` is replaced, as the demo builder replaces a broken demo.
    """
    from hemalens.engine.project.store import ProjectWriter

    rng = np.random.default_rng(seed)
    cells = make_cells(n, rng)
    images = blob_patches(n, rng)
    with ProjectWriter(path, patch_kind=kind, patch_shape=(PATCH, PATCH), classes=CLASSES,
                       overwrite=True) as w:
        for k in range(2):
            w.add_input({"file": f"run{k}/frames_{k}.tif", "modality": kind,
                         "pixel_size_um": 0.3, "status": "ok", "n_frames": 30})
        if kind == "phase":
            w.append(cells, images, raw=images * 3.8 + 0.2)
        else:
            rgb = (np.stack([images, images * 0.5, 1 - images], axis=-1) * 255).astype(np.uint8)
            w.append(cells, rgb)
    return path


@pytest.fixture(scope="session")
def project_factory():
    """``write_project(path, n=300, kind="phase", seed=0) -> path``."""
    return write_project


@pytest.fixture(scope="session")
def small_project(tmp_path_factory) -> Path:
    """A 300-cell phase project (4 classes, every 10th cell rejected, 2 inputs)."""
    return write_project(tmp_path_factory.mktemp("proj") / "small.hemalens")


@pytest.fixture(scope="session")
def rgb_project(tmp_path_factory) -> Path:
    """A 40-cell RGB project."""
    return write_project(tmp_path_factory.mktemp("rgb") / "stained.hemalens", n=40, kind="rgb")


def add_predictions(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Store made-up predictions of model "m" (every cell) and return them."""
    from hemalens.engine.project.store import Project
    from hemalens.engine.review import write_predictions

    with Project.open(path) as p:
        n = p.n_cells
        labels = p.cells["given_label"].copy()
    rng = np.random.default_rng(seed)
    predicted = np.where(labels >= 0, labels, rng.integers(0, len(CLASSES), n)).astype(np.int16)
    flip = rng.random(n) < 0.1  # a few confident disputes
    predicted[flip] = (predicted[flip] + 1) % len(CLASSES)
    confidence = rng.uniform(0.3, 1.0, n).astype(np.float32)
    confidence[flip] = 0.99
    mean = rng.dirichlet(np.ones(len(CLASSES)), n).astype(np.float32)
    mean[np.arange(n), predicted] += 1.0
    mean /= mean.sum(1, keepdims=True)
    cols = {"predicted": predicted, "confidence": confidence, "probs": mean, "mc_mean": mean,
            "mc_median": mean, "mc_std": np.full_like(mean, 0.05),
            "conf_freq": confidence, "conf_freq_ts": confidence,
            "conf_mc_mean": confidence, "conf_mc_mean_ts": confidence}
    write_predictions(path, "m", cols, {"class_names": CLASSES, "measure": "mc_mean_ts"})
    return cols


@pytest.fixture
def predicted_project(small_project, tmp_path) -> Path:
    """A copy of the small project with made-up predictions (queue, disputes, OOD)."""
    import shutil

    path = tmp_path / "predicted.hemalens"
    shutil.copytree(small_project, path)
    add_predictions(path)
    return path


def shown(win) -> np.ndarray:
    """The cells the gallery shows, in order."""
    return win.gallery.grid.order


def select_position(win, pos: int) -> int:
    """Make the gallery's tile ``pos`` current (as a click would) and return its cell."""
    grid = win.gallery.grid
    grid.set_current(pos)
    cell = grid.current_cell
    win.gallery.session.select([cell], current=cell, source=grid)
    return cell
