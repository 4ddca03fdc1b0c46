"""The inspector's explanation section: background maps, stale results, cache, explain all."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import select_position

from hemalens.engine.cli import main
from hemalens.engine.errors import ProjectError
from hemalens.engine.explain.methods import METHODS, explain_cells
from hemalens.engine.explain.render import overlay_rgba
from hemalens.engine.explain.store import read_explanations
from hemalens.engine.models.store import load_model
from hemalens.engine.project.model_index import active_model_info
from hemalens.engine.project.store import Project
from hemalens.engine.review import read_predictions
from hemalens.gui import explanation_view as ev
from hemalens.gui.main_window import MainWindow
from hemalens.gui.workers import active_jobs

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]



@pytest.fixture(scope="module")
def trained(tmp_path_factory, project_factory) -> Path:
    """120 blob cells with a 1-epoch LeNet5 and its stored predictions."""
    path = project_factory(tmp_path_factory.mktemp("explain") / "trained.hemalens", n=120)
    assert main(["train", str(path), "--epochs", "1", "--mc", "3", "--name", "m1",
                 "--json"]) == 0
    assert main(["predict", str(path), "--mc", "3", "--json"]) == 0
    return path


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    yield win
    qtbot.waitUntil(lambda: not win.inspector.explanation.busy, timeout=10000)
    win.close()


def select(win, row: int) -> int:
    return select_position(win, row)


def expected_overlay(path: Path, cell: int, method: str) -> np.ndarray:
    """What the view must show: ``overlay_rgba(patch, explain_cells(...).maps[0])``."""
    model, meta = load_model(path)
    predicted = read_predictions(path, meta["name"])[0]["predicted"]
    with Project.open(path) as p:
        patch = p.image(cell)
    res = explain_cells(model, patch[None], method, targets=np.array([predicted[cell]]))
    return overlay_rgba(patch, res.maps[0])


def shown(view, cell: int) -> bool:
    return view.shown_key is not None and view.shown_key[-1] == cell


def test_labels_cover_the_engine_methods_and_model_info_matches_load_model(trained):
    assert set(ev.METHOD_LABELS) == set(METHODS)
    _, meta = load_model(trained)
    assert active_model_info(trained) == {
        "name": meta["name"], "created": str(meta["created"]),
        "class_names": list(meta["class_names"])}


def test_selecting_a_cell_computes_its_overlay_in_the_background(window, trained, qtbot):
    window.open_project(trained)
    view = window.inspector.explanation
    qtbot.waitUntil(lambda: not view.busy, timeout=20000)  # the first cell, opened at once
    cell = select(window, 5)
    # the selection returns before the map exists: computed by a job, not in the GUI thread
    assert view.image_item.image is None and "computing" in view.status.text()
    qtbot.waitUntil(lambda: shown(view, cell), timeout=20000)
    np.testing.assert_array_equal(view.image_item.image, expected_overlay(trained, cell, "lime"))
    predicted = read_predictions(trained)[0]["predicted"][cell]
    name = view.model_info["class_names"][predicted]
    assert re.fullmatch(rf"LIME, predicted class {name}, \d+ ms", view.status.text())
    # going back to a cell seen before is instant: the in-memory LRU, no job
    started = view.jobs_started
    other = select(window, 6)
    qtbot.waitUntil(lambda: shown(view, other), timeout=20000)
    select(window, 5)
    assert shown(view, cell) and view.jobs_started == started + 1 and not view.busy
    np.testing.assert_array_equal(view.image_item.image, expected_overlay(trained, cell, "lime"))
    # another class than the predicted one is another map
    view.class_combo.setCurrentIndex(view.class_combo.findData(int(predicted + 1) % 4))
    qtbot.waitUntil(lambda: "class" in view.status.text() and "ms" in view.status.text(),
                    timeout=20000)
    assert view.status.text().startswith(f"LIME, class {view.class_combo.currentText()},")


def test_switching_cells_quickly_shows_the_last_cell_not_a_stale_one(
    window, trained, qtbot, monkeypatch
):
    calls: list[int] = []
    running, most = [0], [0]
    lock = threading.Lock()
    real = ev.explain_one

    def recording(path, loaded, method, cell, *args, **kwargs):
        with lock:
            calls.append(int(cell))
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(path, loaded, method, cell, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(ev, "explain_one", recording)
    window.open_project(trained)  # opens on the first cell: its job starts (model loading)
    view = window.inspector.explanation
    first = view.cell
    displayed: list[int] = []
    real_display = view._display
    view._display = lambda key, *args, **kw: (displayed.append(key[-1]),
                                              real_display(key, *args, **kw))
    a, b, c = (select(window, r) for r in (10, 11, 12))
    assert view.jobs_started == 1  # one running, the latest request waiting
    qtbot.waitUntil(lambda: not view.busy, timeout=20000)
    assert calls == [first, c]  # a and b were replaced before they started
    assert a not in calls and b not in calls and shown(view, c)
    assert most[0] == 1  # never two jobs at once
    assert displayed == [c]  # the first cell's late result was not shown over c ...
    assert any(k[-1] == first for k in view._lru)  # ... but kept for going back
    np.testing.assert_array_equal(view.image_item.image, expected_overlay(trained, c, "lime"))
    assert len(active_jobs()) == 0


def test_grad_cam_is_disabled_for_lenet5_with_the_reason(window, trained, qtbot):
    window.open_project(trained)
    view = window.inspector.explanation
    qtbot.waitUntil(lambda: view.shown_key is not None, timeout=20000)
    items = view.method_combo.model()
    for method in ("gradcam", "guided-gradcam"):
        item = items.item(view.method_combo.findData(method))
        assert not item.isEnabled()
        assert "LeNet5" in item.toolTip()
    for method in ("lime", "saliency", "guided-backprop", "occlusion"):
        item = items.item(view.method_combo.findData(method))
        assert item.isEnabled() and item.toolTip() == ""


def test_a_method_chosen_before_the_model_is_known_falls_back_when_it_does_not_apply(
    window, trained, qtbot, message_boxes
):
    window.open_project(trained)  # the first cell's LIME job is loading the model
    view = window.inspector.explanation
    first = view.cell
    view.method_combo.setCurrentIndex(view.method_combo.findData("gradcam"))
    qtbot.waitUntil(lambda: not view.busy and view.shown_key is not None, timeout=20000)
    assert view.method == "lime" and shown(view, first)
    assert view.status.text().startswith("LIME, predicted class")
    assert view.jobs_started <= 2 and message_boxes == []


def test_project_without_a_model_says_train_one_first_and_starts_no_job(
    window, small_project, qtbot, message_boxes
):
    assert window.open_project(small_project)
    view = window.inspector.explanation
    select(window, 3)
    qtbot.wait(50)
    assert view.status.text() == "no model in this project — train one first"
    assert view.jobs_started == 0 and not view.busy and active_jobs() == []
    assert not view.method_combo.isEnabled() and not view.explain_all_button.isEnabled()
    assert view.explain_all_cells() is None and message_boxes == []


def test_explain_all_cells_stores_maps_and_later_cells_come_from_the_cache(
    window, trained, tmp_path, qtbot, message_boxes
):
    path = tmp_path / "P.hemalens"
    shutil.copytree(trained, path)
    window.open_project(path)
    view = window.inspector.explanation
    qtbot.waitUntil(lambda: not view.busy, timeout=20000)
    view.method_combo.setCurrentIndex(view.method_combo.findData("saliency"))
    qtbot.waitUntil(lambda: not view.busy, timeout=20000)
    job = view.explain_all_cells()
    assert job is not None and job.dialog is not None  # with its progress dialog
    assert not view.explain_all_button.isEnabled()
    qtbot.waitUntil(lambda: view.all_job is None, timeout=20000)
    assert job.state == "done" and "stored" in view.status.text()
    info = view.model_info
    with Project.open(path) as p:
        passed = np.flatnonzero(p.cells["qc_pass"])
    maps, _, computed = read_explanations(path, info["name"], "saliency", passed,
                                          model_created=info["created"], settings={"seed": 0})
    assert computed.all() and np.isfinite(maps).all()
    # a cell not seen yet now comes from the project's cache
    cell = select(window, 20)
    qtbot.waitUntil(lambda: shown(view, cell), timeout=20000)
    assert view.status.text().endswith(", cached")
    stored, _, _ = read_explanations(path, info["name"], "saliency", [cell])
    np.testing.assert_array_equal(view.image_item.image,
                                  overlay_rgba(window.project.image(cell), stored[0]))
    assert message_boxes == []


def test_cancelling_explain_all_keeps_the_view_usable(window, trained, tmp_path, qtbot):
    path = tmp_path / "P.hemalens"
    shutil.copytree(trained, path)
    window.open_project(path)
    view = window.inspector.explanation
    job = view.explain_all_cells()
    job.cancel()
    qtbot.waitUntil(lambda: view.all_job is None, timeout=20000)
    assert job.state == "cancelled" and "cancelled" in view.status.text()
    assert view.explain_all_button.isEnabled()


def test_job_errors_go_to_the_status_line_not_a_dialog(
    window, trained, qtbot, monkeypatch, message_boxes
):
    def broken(path, *args, **kwargs):
        raise ProjectError(path, "explanation cache is corrupt")

    monkeypatch.setattr(ev, "explain_one", broken)
    window.open_project(trained)
    view = window.inspector.explanation
    qtbot.waitUntil(lambda: "corrupt" in view.status.text(), timeout=10000)
    assert str(trained) in view.status.text() and view.image_item.image is None
    assert message_boxes == []
    # a failed cell is not remembered: the next one is tried again
    cell = select(window, 4)
    qtbot.waitUntil(lambda: not view.busy, timeout=10000)
    assert view.jobs_started == 2 and f"cell {cell}" in view.status.text()


def test_the_first_job_waits_for_the_windows_first_paint(trained, qtbot):
    # explain_one imports torch: a project opened as the window appears must not delay it
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    assert not win.painted
    win.open_project(trained)
    view = win.inspector.explanation
    assert view.busy and view.jobs_started == 0 and not active_jobs()
    qtbot.waitUntil(lambda: win.painted, timeout=10000)
    qtbot.waitUntil(lambda: view.jobs_started == 1, timeout=10000)
    qtbot.waitUntil(lambda: view.shown_key is not None, timeout=20000)
    assert not view.busy
    win.close()
