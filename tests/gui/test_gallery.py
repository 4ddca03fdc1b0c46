"""The gallery grid and panel over a review session: order, filters, groups, thumbnails,
selection, keyboard, and what a 100k-cell project costs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSES
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QPixmap
from PySide6.QtTest import QTest

from hemalens.engine.review.session import ReviewSession
from hemalens.gui.gallery import GalleryData, patch_to_qimage
from hemalens.gui.gallery_panel import GalleryPanel

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


@pytest.fixture
def session(predicted_project):
    s = ReviewSession.open(predicted_project, user="tech")
    yield s
    s.close()


@pytest.fixture
def panel(qtbot, session):
    p = GalleryPanel()
    qtbot.addWidget(p)
    p.resize(900, 600)
    p.show()
    p.set_session(session)
    session.subscribe(lambda e: e.kind == "cells" and p.cells_changed(e.ids))
    session.subscribe(lambda e: e.kind == "selection" and p.selection_changed(e.ids, e.source))
    return p


def test_least_certain_first_and_qc_filter(panel, session):
    order = panel.grid.order
    assert order.size == int(session.qc.sum()) == 270  # QC-passed cells by default
    conf = session.confidence[order]
    assert np.all(np.diff(conf) >= 0)
    panel.qc_combo.setCurrentIndex(panel.qc_combo.findData(None))
    assert panel.grid.order.size == 300
    assert panel.count_label.text() == "300 of 300 objects"


def test_filters_by_label_prediction_decision_flag_and_search(panel, session):
    panel.given_combo.setCurrentIndex(panel.given_combo.findData(2))
    assert (session.labels[panel.grid.order] == 2).all() and panel.grid.order.size > 0
    panel.given_combo.setCurrentIndex(0)
    panel.pred_combo.setCurrentIndex(panel.pred_combo.findData(1))
    assert (session.predicted[panel.grid.order] == 1).all()
    panel.pred_combo.setCurrentIndex(0)
    panel.flag_combo.setCurrentIndex(panel.flag_combo.findData("disputed"))
    assert session.disputed[panel.grid.order].all() and panel.grid.order.size > 0
    panel.flag_combo.setCurrentIndex(0)
    panel.conf_lo.setValue(90)
    panel.conf_lo.editingFinished.emit()
    assert (session.confidence[panel.grid.order] >= 0.9).all()
    panel.conf_lo.setValue(0)
    panel.conf_lo.editingFinished.emit()
    panel.search.setText("57")
    panel.search.returnPressed.emit()
    assert panel.grid.order.tolist() == [57]
    panel.search.clear()
    assert panel.grid.order.size == 270


def test_grouped_by_predicted_class_has_a_header_per_group(panel, session):
    panel.mode_combo.setCurrentIndex(1)
    segments = panel.grid._segments
    names = [h for h, _ in segments]
    assert len(segments) == len(CLASSES)
    for (header, cells), code in zip(segments, range(len(CLASSES)), strict=True):
        assert header.startswith(CLASSES[code]) and f"{cells.size:,} cells" in header
        assert (session.predicted[cells] == code).all()
    assert all(n is not None for n in names)


def test_review_queue_mode_and_progress(panel, session):
    panel.mode_combo.setCurrentIndex(2)
    np.testing.assert_array_equal(panel.grid.order, session.queue[session.qc[session.queue]])
    decided, total = session.queue_progress()
    assert panel.queue_label.text() == f"Review queue: {decided} of {total} decided"


def test_thumbnails_are_read_lazily_with_a_placeholder_for_damage(session, monkeypatch):
    data = GalleryData(session, thumb_size=48)
    pix = data.thumbnail(3)
    assert isinstance(pix, QPixmap) and (pix.width(), pix.height()) == (48, 48)
    assert data.cached == 1

    def broken(i):
        raise OSError("corrupt chunk")

    monkeypatch.setattr(session.project, "image", broken)
    pix = data.thumbnail(4)  # a placeholder, never a blank or another cell
    assert pix.width() == 48 and 4 in data.read_errors
    assert "patch unreadable: corrupt chunk" in data.tooltip(4)


def test_auto_contrast_makes_dark_patches_visible():
    dark = np.full((20, 20), 0.02, np.float32)
    dark[5:15, 5:15] = 0.06
    fixed = patch_to_qimage(dark, "fixed")
    auto = patch_to_qimage(dark, "auto")
    assert fixed.pixelColor(10, 10).value() < 20  # nearly black on the fixed scale
    assert auto.pixelColor(10, 10).value() > 200 and auto.pixelColor(0, 0).value() < 30


def test_click_shift_click_ctrl_click_and_keys_select_in_the_session(panel, session, qtbot):
    grid = panel.grid
    top = grid.verticalScrollBar().value()
    centre = grid.tile_rect(0).translated(0, -top).center()
    QTest.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    first = int(grid.order[0])
    assert session.current == first and session.selection.tolist() == [first]
    c3 = grid.tile_rect(3).translated(0, -top).center()
    QTest.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.ShiftModifier, c3)
    assert sorted(session.selection.tolist()) == sorted(grid.order[:4].tolist())
    QTest.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.ControlModifier, grid.tile_rect(1).translated(0, -top)
                     .center())
    assert int(grid.order[1]) not in session.selection.tolist()
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key.Key_Right)
    assert session.selection.tolist() == [int(grid.order[2])]
    QTest.keyClick(grid, Qt.Key.Key_Down)
    assert grid.current == 2 + grid.cols
    QTest.keyClick(grid, Qt.Key.Key_End)
    assert grid.current_cell == int(grid.order[-1])
    QTest.keyClick(grid, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert session.selection.size == grid.order.size
    assert grid.position_at(QPoint(-5, -5)) == -1


def test_an_edit_repaints_in_place_and_the_filter_applies_on_refresh(panel, session):
    panel.decision_combo.setCurrentIndex(panel.decision_combo.findData(0))  # undecided
    before = panel.grid.order.copy()
    cell = int(before[0])
    session.confirm([cell])
    assert panel.grid.order.tolist() == before.tolist()  # the cell does not jump away
    panel.refresh()
    assert cell not in panel.grid.order.tolist()


@pytest.fixture(scope="module")
def big_project(tmp_path_factory):
    """100k cells (4x4 patches: the gallery's cost does not depend on patch size)."""
    from hemalens.engine.project import ProjectWriter
    from hemalens.engine.review import write_predictions

    path = tmp_path_factory.mktemp("big") / "big.hemalens"
    n = 100_000
    rng = np.random.default_rng(1)
    with ProjectWriter(path, patch_kind="phase", patch_shape=(4, 4), classes=CLASSES) as w:
        w.add_input({"file": "big.tif", "run": "r1"})
        w.append({"input_id": np.zeros(n, np.int32),
                  "original_label": rng.integers(0, 4, n)}, rng.random((n, 4, 4)))
    write_predictions(path, "m", {"predicted": rng.integers(0, 4, n).astype(np.int16),
                                  "confidence": rng.random(n).astype(np.float32)},
                      {"class_names": CLASSES})
    return path


def test_100k_cells_open_fast_and_read_only_what_shows(qtbot, big_project):
    s = ReviewSession.open(big_project, user="t")
    try:
        p = GalleryPanel()
        qtbot.addWidget(p)
        p.resize(1000, 700)
        p.show()
        p.set_session(s)
        qtbot.waitExposed(p)
        qtbot.wait(50)
        p.grid.viewport().repaint()
        assert p.grid.order.size == 100_000
        on_screen = len(p.grid.visible_positions())
        assert 0 < p.data.cached <= 3 * on_screen  # the screen (and the next), not 100k
        p.grid.set_current(99_000)
        qtbot.wait(20)
        p.grid.viewport().repaint()
        assert p.data.is_cached(int(p.grid.order[99_000]))
        assert p.data.cached < 6 * on_screen
    finally:
        s.close()
