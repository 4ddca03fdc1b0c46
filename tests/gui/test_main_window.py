from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt

from hemalens.engine import __version__
from hemalens.engine.jobs import checkpoint
from hemalens.engine.project.store import Project
from hemalens.gui.cell_panel import format_value
from hemalens.gui.main_window import MainWindow
from hemalens.gui.workers import start_job

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


@pytest.fixture
def truth(small_project):
    with Project.open(small_project) as p:
        return {k: v.copy() for k, v in p.cells.items()}, list(p.classes)


def select_row(win, row):
    view = win.gallery.view
    view.setCurrentIndex(win.gallery.model.index(row))
    return win.gallery.model.cell_row(row)


def test_opening_a_project_shows_its_cells_and_counts(window, small_project, truth, message_boxes):
    cells, _ = truth
    assert window.windowTitle() == "HemaLens"
    assert window.open_project(small_project)
    assert window.windowTitle() == "HemaLens — small"
    assert window.gallery.model.rowCount() == 300
    status = window.project_label.text()
    assert "small.h5" in status and "300 objects" in status
    assert f"{int(cells['qc_pass'].sum())} cells passed QC" in status
    # the window opens on the first cell of the gallery, not on an empty inspector
    assert window.cell_panel.cell == window.gallery.model.cell_row(0)
    assert message_boxes == []


def test_selecting_a_cell_fills_the_feature_table(window, small_project, truth):
    cells, classes = truth
    window.open_project(small_project)
    panel = window.cell_panel
    i = select_row(window, 17)
    assert panel.cell == i
    assert panel.title.text() == f"Cell {i}"
    assert panel.value_of("diameter_um") == pytest.approx(float(cells["diameter_um"][i]))
    assert panel.value_of("area_um2") == pytest.approx(float(cells["area_um2"][i]))
    assert panel.value_of("cell_id") == i
    assert panel.value_of("file") == f"run{i % 2}/frames_{i % 2}.tif"
    code = int(cells["given_label"][i])
    assert panel.value_of("given_label") == (classes[code] if code >= 0 else "")
    texts = {panel.table.item(r, 0).text(): panel.table.item(r, 1).text()
             for r in range(panel.table.rowCount())}
    assert texts["diameter_um"] == f"{cells['diameter_um'][i]:.4g} µm"
    assert texts["optical_volume_um3"].endswith("µm³")
    assert set(cells) - {"given_label", "original_label"} <= set(texts)
    # raw phase shown in rad with a colour bar spanning the patch's range
    raw = window.project.raw(i)
    assert panel.colorbar.isVisible()
    assert panel.colorbar.levels() == pytest.approx((raw.min(), raw.max()), rel=1e-5)
    np.testing.assert_allclose(panel.phase_item.image, raw)


def test_rejected_cell_shows_qc_reason(window, small_project, truth):
    cells, _ = truth
    window.open_project(small_project)
    i = select_row(window, window.gallery.model.rowCount() - 1)
    assert not cells["qc_pass"][i]
    assert window.cell_panel.value_of("QC") is False
    reason = cells["qc_reason"][i].decode()
    texts = [window.cell_panel.table.item(r, 1).text()
             for r in range(window.cell_panel.table.rowCount())]
    assert f"rejected ({reason})" in texts


def test_filter_change_clears_the_cell_panel(window, small_project):
    window.open_project(small_project)
    select_row(window, 3)
    combo = window.gallery.qc_combo
    combo.setCurrentIndex(combo.findData("rejected"))
    assert window.gallery.model.rowCount() == 30
    assert window.cell_panel.cell == -1 and window.cell_panel.table.rowCount() == 0


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all\n" * 10, None])
def test_bad_file_shows_an_error_and_the_window_stays_usable(
    window, small_project, tmp_path, message_boxes, content
):
    window.open_project(small_project)
    bad = tmp_path / "bad.h5"
    if content is not None:
        bad.write_bytes(content)
    assert not window.open_project(bad)
    assert len(message_boxes) == 1
    kind, title, text = message_boxes[0]
    assert kind == "critical" and title == "Cannot open project"
    assert str(bad) in text and "\n" not in text
    # the previous project is still shown and usable
    assert window.windowTitle() == "HemaLens — small"
    assert window.gallery.model.rowCount() == 300
    i = select_row(window, 2)
    assert window.cell_panel.cell == i
    assert window.open_project(small_project)


def test_truncated_project_is_reported(window, small_project, tmp_path, message_boxes):
    cut = tmp_path / "cut.hemalens"
    shutil.copytree(small_project, cut)
    data = (cut / "cells.h5").read_bytes()
    (cut / "cells.h5").write_bytes(data[: len(data) // 2])
    assert not window.open_project(cut)
    assert len(message_boxes) == 1 and str(cut) in message_boxes[0][2]
    assert window.project is None and window.windowTitle() == "HemaLens"


def test_rgb_project_shows_colour_patch_without_colour_bar(window, rgb_project):
    assert window.open_project(rgb_project)
    assert window.gallery.model.rowCount() == 40
    pix = window.gallery.model.index(0).data(Qt.ItemDataRole.DecorationRole)
    assert pix.width() == window.gallery.model.thumb_size
    i = select_row(window, 0)
    panel = window.cell_panel
    assert not panel.colorbar.isVisible()
    np.testing.assert_array_equal(panel.rgb_item.image, window.project.image(i))


def test_about_shows_the_version(window, message_boxes):
    window.about_action.trigger()
    assert message_boxes and message_boxes[0][0] == "about"
    assert __version__ in message_boxes[0][2]


def test_close_cancels_running_jobs_and_waits(qtbot, small_project, message_boxes):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    win.open_project(small_project)
    started = threading.Event()

    def endless(progress=None):
        started.set()
        for _ in range(2000):
            checkpoint(progress)
            time.sleep(0.01)

    job = start_job(endless, title="Endless", parent=win)
    assert started.wait(5)
    t0 = time.perf_counter()
    win.close()
    assert time.perf_counter() - t0 < 2
    assert win.project is None
    with qtbot.waitSignal(job.ended, timeout=5000) as blocker:
        pass
    assert blocker.args == ["cancelled"]
    assert message_boxes == []


def test_format_value_units_and_special_values():
    assert format_value(np.float32(8.3125), "µm") == "8.312 µm"
    assert format_value(np.float32(np.nan), "µm³") == "—"
    assert format_value(np.bool_(True)) == "yes"
    assert format_value(np.int64(12345), "px") == "12,345 px"
    assert format_value(b"too_small") == "too_small"


def test_menu_actions_and_open_dialog(window, small_project, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    assert window.open_action.shortcut().toString() == "Ctrl+O"
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&Help"]
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(small_project), "")))
    window.open_action.trigger()
    assert window.project is not None and window.gallery.model.rowCount() == 300
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    window.open_action.trigger()  # cancelled dialog: nothing changes
    assert window.gallery.model.rowCount() == 300
    window.quit_action.trigger()
    assert not window.isVisible() and window.project is None


def test_predictions_sort_least_certain_first_and_show_in_the_inspector(
    window, tmp_path, small_project, truth
):
    from hemalens.engine.review import write_predictions

    cells, classes = truth
    path = tmp_path / "predicted.hemalens"
    shutil.copytree(small_project, path)
    n = len(cells["cell_id"])
    rng = np.random.default_rng(0)
    predicted = rng.integers(0, len(classes), n).astype(np.int16)
    confidence = rng.uniform(0.3, 1.0, n).astype(np.float32)
    mean = rng.dirichlet(np.ones(len(classes)), n).astype(np.float32)
    write_predictions(path, "m", {
        "predicted": predicted, "confidence": confidence, "probs": mean, "mc_mean": mean,
        "mc_median": mean, "mc_std": np.full_like(mean, 0.05),
    }, {"class_names": classes, "measure": "mc_mean_ts"})
    assert window.open_project(path)
    model = window.gallery.model
    order = np.asarray(model.order)
    passed = cells["qc_pass"][order]
    n_passed = int(passed.sum())
    assert passed[:n_passed].all()  # QC-passed cells first ...
    assert np.all(np.diff(confidence[order[:n_passed]]) >= 0)  # ... least certain first
    first = int(order[0])
    caption = model.data(model.index(0))
    assert classes[predicted[first]] in caption and f"{confidence[first]:.0%}" in caption
    assert window.cell_panel.cell == first  # opens on the least certain cell
    assert window.cell_panel.value_of("predicted") == classes[predicted[first]]
    assert window.cell_panel.value_of("confidence") == pytest.approx(confidence[first])
    assert window.cell_panel.value_of(f"p({classes[0]})") == pytest.approx(mean[first, 0])


def _damaged_copy(src, dst, how):
    import h5py

    shutil.copytree(src, dst)
    if how == "class names are integers":
        with h5py.File(dst / "cells.h5", "r+") as f:
            del f["labels/classes"]
            f["labels/classes"] = np.arange(4)
    return dst


def test_a_damaged_project_is_refused_with_a_dialog_not_a_crash(
    window, small_project, tmp_path, message_boxes
):
    bad = _damaged_copy(small_project, tmp_path / "bad.hemalens", "class names are integers")
    assert not window.open_project(bad)
    assert len(message_boxes) == 1
    assert "class names are not text" in message_boxes[0][2] and str(bad) in message_boxes[0][2]
    assert window.project is None


def test_predictions_without_their_class_column_open_without_them(
    window, small_project, tmp_path, message_boxes
):
    import h5py

    from hemalens.engine.review import write_predictions

    path = tmp_path / "p.hemalens"
    shutil.copytree(small_project, path)
    with Project.open(path) as p:
        n = p.n_cells
    write_predictions(path, "m", {"predicted": np.zeros(n, np.int16),
                                  "confidence": np.ones(n, np.float32)}, {})
    with h5py.File(path / "derived/predictions/m.h5", "r+") as f:
        del f["predicted"]
    assert window.open_project(path)  # the cells are shown, the damage is reported
    assert window.gallery.model.rowCount() == 300
    assert "damaged predictions" in window.statusBar().currentMessage()
