from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from conftest import select_position, shown

from hemalens.engine import __version__
from hemalens.engine.jobs import checkpoint
from hemalens.engine.project.store import Project
from hemalens.gui.inspector import format_value
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
    return select_position(win, row)


def test_opening_a_project_shows_its_cells_and_counts(window, small_project, truth, message_boxes):
    cells, _ = truth
    assert window.windowTitle() == "HemaLens"
    assert window.open_project(small_project)
    assert window.windowTitle() == "HemaLens — small"
    passed = int(cells["qc_pass"].sum())
    assert shown(window).size == passed  # QC-passed cells by default
    status = window.project_label.text()
    assert "small.hemalens" in status and "300 objects" in status
    assert f"{passed} cells passed QC" in status
    # the window opens on the first cell of the gallery, not on an empty inspector
    assert window.inspector.cell == int(shown(window)[0])
    assert message_boxes == []


def test_selecting_a_cell_fills_the_inspector(window, small_project, truth):
    cells, classes = truth
    window.open_project(small_project)
    panel = window.inspector
    panel.tabs.setCurrentIndex(2)  # measures & features
    i = select_row(window, 17)
    assert panel.cell == i
    assert f"Cell {i}" in panel.title.text()
    assert panel.value_of("diameter_um") == pytest.approx(float(cells["diameter_um"][i]))
    assert panel.value_of("area_um2") == pytest.approx(float(cells["area_um2"][i]))
    assert panel.value_of("cell_id") == i
    assert panel.value_of("file") == f"run{i % 2}/frames_{i % 2}.tif"
    code = int(cells["given_label"][i])
    assert panel.value_of("given_label") == (classes[code] if code >= 0 else "")
    table = panel.features
    texts = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
    assert texts["diameter_um"] == f"{cells['diameter_um'][i]:.4g} µm"
    assert texts["optical_volume_um3"].endswith("µm³")
    assert set(cells) - {"given_label", "original_label", "qc_pass", "qc_reason"} <= set(texts)
    raw = window.project.raw(i)
    assert panel.colorbar.isVisible()
    assert panel.colorbar.levels() == pytest.approx((raw.min(), raw.max()), rel=1e-5)
    np.testing.assert_allclose(panel.phase_item.image, raw)


def test_rejected_cell_shows_qc_reason(window, small_project, truth):
    cells, _ = truth
    window.open_project(small_project)
    window.gallery.qc_combo.setCurrentIndex(window.gallery.qc_combo.findData(False))
    window.inspector.tabs.setCurrentIndex(2)
    i = select_row(window, 0)
    assert not cells["qc_pass"][i]
    assert window.inspector.value_of("QC") is False
    reason = cells["qc_reason"][i].decode()
    table = window.inspector.features
    assert f"rejected ({reason})" in [table.item(r, 1).text() for r in range(table.rowCount())]


def test_an_unreadable_patch_says_so_and_never_shows_another_cell(
    window, small_project, monkeypatch
):
    """The defect: selecting cell 1600 showed the image of cell 1499, the error on stderr."""
    window.open_project(small_project)
    i = select_row(window, 5)
    bad = int(shown(window)[6])

    def image(k):
        if k == bad:
            raise OSError("corrupt chunk")
        return real(k)

    def raw(k):
        if k == bad:
            raise OSError("corrupt chunk")
        return real_raw(k)

    real, real_raw = window.project.image, window.project.raw
    monkeypatch.setattr(window.project, "image", image)
    monkeypatch.setattr(window.project, "raw", raw)
    select_row(window, 6)
    panel = window.inspector
    assert panel.cell == bad and f"Cell {bad}" in panel.title.text()
    assert panel.message.isVisible() and "cannot be read" in panel.message.text()
    assert panel.phase_item.image is None  # no image of cell i left on screen
    assert f"Cell {bad}" in window.statusBar().currentMessage()
    assert i != bad


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
    i = select_row(window, 2)
    assert window.inspector.cell == i
    assert window.open_project(small_project)


def test_truncated_project_is_reported(window, small_project, tmp_path, message_boxes):
    cut = tmp_path / "cut.hemalens"
    shutil.copytree(small_project, cut)
    data = (cut / "cells.h5").read_bytes()
    (cut / "cells.h5").write_bytes(data[: len(data) // 2])
    assert not window.open_project(cut)
    assert len(message_boxes) == 1 and str(cut) in message_boxes[0][2]
    assert "damaged project" in message_boxes[0][2]  # told apart from a foreign file
    assert window.project is None and window.windowTitle() == "HemaLens"


def test_rgb_project_shows_colour_patch_without_colour_bar(window, rgb_project):
    assert window.open_project(rgb_project)
    assert shown(window).size == 36  # 40 objects, every 10th rejected
    i = select_row(window, 0)
    pix = window.gallery.data.thumbnail(i)
    assert pix.width() == window.gallery.data.thumb_size
    panel = window.inspector
    assert not panel.colorbar.isVisible()
    np.testing.assert_array_equal(panel.rgb_item.image, window.project.image(i))


def test_about_shows_the_version(window, message_boxes):
    window.about_action.trigger()
    assert message_boxes and message_boxes[0][0] == "about"
    assert __version__ in message_boxes[0][2]


def test_close_asks_before_cancelling_running_jobs(qtbot, small_project, monkeypatch):
    from hemalens.gui import main_window

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    win.open_project(small_project)
    started = threading.Event()

    def endless(progress=None):
        started.set()
        for _ in range(3000):
            checkpoint(progress)
            time.sleep(0.01)

    questions = []
    monkeypatch.setattr(main_window, "ask", lambda *a: questions.append(a[2]) or False)
    job = start_job(endless, title="Endless", parent=win, show_dialog=False)
    assert started.wait(5)
    win.close()  # the user says No: nothing happens
    assert win.isVisible() and job.is_running and "Endless" in questions[0]
    monkeypatch.setattr(main_window, "ask", lambda *a: True)
    t0 = time.perf_counter()
    win.close()
    assert time.perf_counter() - t0 < 2
    assert not win.isVisible() and win.project is None
    qtbot.waitUntil(lambda: job.state == "cancelled", timeout=5000)


def test_format_value_units_and_special_values():
    assert format_value(np.float32(8.3125), "µm") == "8.312 µm"
    assert format_value(np.float32(np.nan), "µm³") == "—"
    assert format_value(np.bool_(True)) == "yes"
    assert format_value(np.int64(12345), "px") == "12,345 px"
    assert format_value(b"too_small") == "too_small"


def test_menus_keys_and_open_dialog(window, small_project, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    assert window.open_action.shortcut().toString() == "Ctrl+O"
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&Review", "&Model", "&View", "&Help"]
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(small_project / "hemalens-project.json"),
                                                      "")))
    window.open_action.trigger()  # a file inside the folder names the folder
    assert window.project is not None and shown(window).size == 270
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    window.open_action.trigger()  # cancelled dialog: nothing changes
    assert shown(window).size == 270
    recent = [a.text() for a in window.recent_menu.actions()]
    assert recent == [str(small_project)]
    window.quit_action.trigger()
    assert not window.isVisible() and window.project is None


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
    assert shown(window).size == int(window.session.qc.sum())  # every cell that passed QC
    message = window.statusBar().currentMessage()
    assert message.startswith("Predictions not shown") and "predicted" in message, message
