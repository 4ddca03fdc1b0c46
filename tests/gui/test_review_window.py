"""The review window as a technician and a curator use it: keys, undo, bulk edits, sign-off,
panels that follow the edits, training and import from the window, report export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import shiboken6
from conftest import CLASSES, add_predictions, select_position
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from hemalens.engine.cli import main
from hemalens.engine.project.annotations import DECISIONS
from hemalens.engine.project.store import Project
from hemalens.engine.review.session import ReviewSession
from hemalens.gui import main_window as mw
from hemalens.gui.main_window import MainWindow
from hemalens.gui.workers import active_jobs

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

CODE = {name: code for code, name in enumerate(DECISIONS)}


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    qtbot.waitUntil(lambda: not active_jobs(), timeout=30000)
    if shiboken6.isValid(win):
        win.close()


@pytest.fixture
def opened(window, predicted_project):
    assert window.open_project(predicted_project)
    window.gallery.grid.setFocus()
    return window


def key(win, k, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """Press a key where the reviewer's focus is (the gallery grid)."""
    QTest.keyClick(win.gallery.grid, k, modifier)


def history(path: Path, cell: int) -> dict[str, np.ndarray]:
    with ReviewSession.open(path, user="reader") as s:
        return s.store.history(cell)


def test_number_key_relabels_moves_on_and_undo_redo_restore_it(opened, predicted_project):
    win = opened
    s = win.session
    cell = select_position(win, 3)
    before = int(s.labels[cell])
    target = 1 if before != 1 else 2
    key(win, getattr(Qt.Key, f"Key_{target + 1}"))
    assert s.labels[cell] == target
    assert s.decisions[cell] == CODE["relabelled"]
    assert win.gallery.grid.current_cell == int(win.gallery.grid.order[4])  # moved on
    assert win.undo_stack.count() == 1 and "Class" in win.undo_stack.text(0)
    # durable: another reader sees it at once
    with Project.open(predicted_project) as p:
        assert p.cells["given_label"][cell] == target

    key(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert s.labels[cell] == before
    key(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert s.labels[cell] == target
    # append-only history: the edit, its undo and its redo are three rows
    rows = history(predicted_project, cell)
    assert len(next(iter(rows.values()))) >= 3


def test_space_confirms_x_excludes_u_marks_unsure(opened):
    win = opened
    s = win.session
    a = select_position(win, 0)
    key(win, Qt.Key.Key_Space)
    b = win.gallery.grid.current_cell
    key(win, Qt.Key.Key_X)
    c = win.gallery.grid.current_cell
    key(win, Qt.Key.Key_U)
    assert [s.decisions[i] for i in (a, b, c)] == [CODE["confirmed"], CODE["excluded"],
                                                   CODE["unsure"]]
    assert s.labels[a] >= 0  # a confirmed unlabelled cell takes its prediction


def test_a_key_on_a_multi_selection_edits_all_and_undoes_in_one_step(opened):
    win = opened
    s = win.session
    cells = [int(c) for c in win.gallery.grid.order[:6]]
    before = s.labels[cells].copy()
    win.gallery.grid.set_current(0)
    s.select(cells, current=cells[0], source=None)
    key(win, Qt.Key.Key_3)
    assert (s.labels[cells] == 2).all()
    assert win.undo_stack.count() == 1
    win.review.undo.trigger()
    assert (s.labels[cells] == before).all()


def test_context_menu_offers_the_same_actions(opened):
    from PySide6.QtWidgets import QMenu

    menu = QMenu()
    opened.review.fill_menu(menu)
    texts = [a.text().replace("&", "") for a in menu.actions()]
    assert any("Confirm" in t for t in texts) and any("Exclude" in t for t in texts)
    classes = [a.text() for a in opened.review.class_actions]
    assert classes == [f"{k + 1}  {c}" for k, c in enumerate(CLASSES)]


def test_help_overlay_lists_the_class_keys(opened):
    rows = dict(opened.review.help_rows())
    assert rows["1"].startswith(f"Class {CLASSES[0]}")
    assert "Ctrl+Z" in rows
    opened.toggle_help()
    assert opened.help.isVisible()
    opened.toggle_help()
    assert not opened.help.isVisible()


def test_sign_off_is_refused_with_the_reason_then_allowed(opened, monkeypatch, message_boxes):
    win = opened
    s = win.session
    sample = s.sample_list[0]
    monkeypatch.setattr(mw.QInputDialog, "getItem", lambda *a, **k: (sample, True))
    monkeypatch.setattr(mw, "ask", lambda *a, **k: True)
    in_sample = np.flatnonzero((s.samples == sample) & s.qc)
    s.mark_unsure(in_sample[:1])
    win.sign_off()
    assert message_boxes and message_boxes[-1][1] == "Cannot sign off"
    assert "unsure" in message_boxes[-1][2]
    assert sample not in s.signed
    # decide everything of the sample, then it can be signed
    s.confirm(in_sample)
    win.sign_off()
    assert sample in s.signed
    assert "signed off" in win.statusBar().currentMessage()
    # a signed-off cell refuses keys with a one-line reason, nothing changes
    select_position(win, int(win.gallery.grid.position_of(int(in_sample[0]))))
    label = int(s.labels[in_sample[0]])
    key(win, Qt.Key.Key_4 if label != 3 else Qt.Key.Key_1)
    assert int(s.labels[in_sample[0]]) == label
    assert "signed off" in win.statusBar().currentMessage()


def test_differential_follows_the_edits(opened, qtbot):
    win = opened
    s = win.session
    sample = s.sample_list[0]
    before = int(win.differential.value(sample, "Relabelled"))
    cell = int(np.flatnonzero((s.samples == sample) & s.qc & (s.labels != 0))[0])
    s.relabel([cell], 0)
    qtbot.waitUntil(lambda: int(win.differential.value(sample, "Relabelled")) == before + 1,
                    timeout=3000)


def test_the_window_follows_edits_made_by_another_program(opened, predicted_project, qtbot):
    win = opened
    cell = int(win.gallery.grid.order[10])
    label = int(win.session.labels[cell])
    new = (label + 1) % len(CLASSES)
    assert main(["label", str(predicted_project), "--cells", str(cell), "--set", CLASSES[new],
                 "--user", "terminal"]) == 0
    qtbot.waitUntil(lambda: int(win.session.labels[cell]) == new, timeout=5000)
    # the other program's edit is not on this window's undo stack
    assert win.undo_stack.count() == 0


def test_report_export_writes_the_files(opened, tmp_path, qtbot):
    from hemalens.gui.report_export import export_report

    done: list = []
    export_report(opened, opened.session, tmp_path / "report", on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=60000)
    paths = done[0]
    for key_ in ("html", "differential_csv", "changes_csv"):
        assert Path(paths[key_]).stat().st_size > 0, key_
    html = Path(paths["html"]).read_text()
    assert Path(opened.session.project.path).stem in html
    if paths.get("pdf") is not None:
        assert Path(paths["pdf"]).read_bytes()[:4] == b"%PDF"


@pytest.fixture
def trainable(tmp_path, project_factory) -> Path:
    return project_factory(tmp_path / "train.hemalens", n=120)


def test_training_from_the_window_draws_live_curves_and_shows_the_model(window, trainable,
                                                                       qtbot):
    assert window.open_project(trainable)
    options = {"arch": "lenet5", "epochs": 2, "patience": 5, "seed": 0, "passes": 3,
               "name": "from-window"}
    job = window.models.train(options)
    assert job is not None
    qtbot.waitUntil(lambda: not window.models.training, timeout=90000)
    assert len(window.models.epochs) == 2  # one curve point per epoch arrived live
    with Project.open(trainable) as p:
        from hemalens.engine.project.model_index import model_names

        assert "from-window" in model_names(p)


def test_cancelled_training_saves_nothing(window, trainable, qtbot):
    assert window.open_project(trainable)
    options = {"arch": "lenet5", "epochs": 50, "patience": 50, "seed": 0, "passes": 3,
               "name": "cancelled"}
    job = window.models.train(options)
    qtbot.waitUntil(lambda: len(window.models.epochs) >= 1, timeout=60000)
    job.cancel()
    qtbot.waitUntil(lambda: not window.models.training, timeout=60000)
    assert "cancelled" in window.models.curve_label.text()
    with Project.open(trainable) as p:
        from hemalens.engine.project.model_index import model_names

        assert "cancelled" not in model_names(p)


def test_import_dialog_previews_and_imports_simulated_frames(window, tmp_path, qtbot):
    from hemalens.gui.import_dialog import ImportDialog

    frames = tmp_path / "frames"
    assert main(["synth", "qpi", str(frames), "--frames", "6", "--seed", "3"]) == 0
    inputs = sorted(str(p) for p in frames.rglob("*.tif"))
    assert inputs
    dialog = ImportDialog()
    qtbot.addWidget(dialog)
    opened: list[str] = []
    dialog.imported.connect(opened.append)
    job = dialog.set_inputs(inputs)
    if job is not None:
        qtbot.waitUntil(lambda: not job.is_running, timeout=30000)
    qtbot.waitUntil(lambda: bool(dialog.specs_ready()), timeout=30000)
    out = tmp_path / "imported.hemalens"
    dialog.out.setText(str(out))
    job = dialog.start_import()
    assert job is not None
    qtbot.waitUntil(lambda: bool(opened), timeout=60000)
    with Project.open(opened[0]) as p:
        assert p.n_cells > 0
    assert "cells passed QC" in dialog.status.text()


def test_actions_have_tips_and_the_layout_is_restored(window, predicted_project, tmp_path):
    for a in window.findChildren(mw.QAction):
        if a.text() and not a.isSeparator() and a.menu() is None and a.shortcut().toString():
            assert a.statusTip() or a.toolTip(), a.text()
    window.docks["calibration"].raise_()
    window.close()
    again = MainWindow()
    try:
        assert again.docks["inspector"].isVisible() or not again.isVisible()
    finally:
        again.close()


def test_predictions_written_by_another_program_appear(window, small_project, tmp_path, qtbot):
    path = tmp_path / "later.hemalens"
    shutil.copytree(small_project, path)
    assert window.open_project(path)
    assert not window.session.has_predictions
    add_predictions(path)
    qtbot.waitUntil(lambda: window.session.has_predictions, timeout=5000)
    assert window.session.queue.size > 0
