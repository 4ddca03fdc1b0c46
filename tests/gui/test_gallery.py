from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap

from hemalens.engine.project.store import Project
from hemalens.gui.gallery import (
    CellRowRole,
    GalleryModel,
    GalleryPanel,
    GalleryView,
    QcPassRole,
    patch_to_qimage,
    render_thumbnail,
)

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]

DISPLAY = Qt.ItemDataRole.DisplayRole
DECORATION = Qt.ItemDataRole.DecorationRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole


@pytest.fixture
def project(small_project):
    with Project.open(small_project) as p:
        yield p


def test_model_lists_every_cell_passed_first_then_by_id(project):
    model = GalleryModel(project)
    n = project.n_cells
    assert model.rowCount() == n == 300
    qc = project.cells["qc_pass"]
    ids = np.array([model.index(r).data(CellRowRole) for r in range(n)])
    expected = np.r_[np.flatnonzero(qc), np.flatnonzero(~qc)]
    np.testing.assert_array_equal(ids, expected)
    assert [model.index(r).data(QcPassRole) for r in (0, n - 1)] == [True, False]


def test_thumbnails_are_pixmaps_of_the_thumbnail_size(project):
    model = GalleryModel(project, thumb_size=72)
    pix = model.index(3).data(DECORATION)
    assert isinstance(pix, QPixmap)
    assert (pix.width(), pix.height()) == (72, 72)


def test_captions_and_tooltips_show_label_or_qc_reason(project):
    model = GalleryModel(project)
    cells, classes = project.cells, project.classes
    for r in (0, 5, 150, 299):
        i = model.index(r).data(CellRowRole)
        caption = model.index(r).data(DISPLAY)
        code = int(cells["given_label"][i])
        if cells["qc_pass"][i]:
            assert caption == (classes[code] if code >= 0 else "—")
        else:
            assert caption == cells["qc_reason"][i].decode()
        tip = model.index(r).data(TOOLTIP)
        assert f"Cell {i}" in tip and f"{cells['diameter_um'][i]:.2f} µm" in tip
    rejected_row = model.rowCount() - 1
    assert model.index(rejected_row).data(Qt.ItemDataRole.ForegroundRole) is not None


def test_greyscale_mapping_is_fixed_and_rgb_is_kept():
    phase = np.full((50, 50), 0.5, np.float32)
    phase[0, 0], phase[0, 1] = 0.0, 1.0
    img = patch_to_qimage(phase)
    assert img.pixelColor(0, 0).red() == 0 and img.pixelColor(1, 0).red() == 255
    assert img.pixelColor(10, 10).red() == 128  # fixed [0, 1] map, not per-patch stretch
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 40
    c = patch_to_qimage(rgb).pixelColor(29, 19)
    assert (c.red(), c.green(), c.blue(), patch_to_qimage(rgb).width()) == (200, 0, 40, 30)
    with pytest.raises(ValueError, match="shape"):
        patch_to_qimage(np.zeros((4, 4, 4)))


def test_rejected_thumbnails_get_a_red_frame():
    patch = np.zeros((50, 50), np.float32)
    ok = render_thumbnail(patch, 64).toImage().pixelColor(1, 32)
    bad = render_thumbnail(patch, 64, rejected=True).toImage().pixelColor(1, 32)
    assert (ok.red(), ok.green()) == (0, 0)
    assert bad.red() > 150 and bad.green() < 100


def test_filters_change_row_count(project):
    model = GalleryModel(project)
    cells = project.cells
    qc, labels = cells["qc_pass"], cells["given_label"]
    model.set_filter(qc="passed")
    assert model.rowCount() == qc.sum()
    model.set_filter(qc="rejected")
    assert model.rowCount() == (~qc).sum() == 30
    model.set_filter(qc="all", label=2)
    assert model.rowCount() == (labels == 2).sum()
    model.set_filter(qc="passed")  # label filter kept
    assert model.rowCount() == ((labels == 2) & qc).sum()
    assert all(model.index(r).data(CellRowRole) in np.flatnonzero((labels == 2) & qc)
               for r in range(model.rowCount()))
    model.set_filter(qc="all", label=-1)
    assert model.rowCount() == (labels == -1).sum() > 0
    model.set_filter(label=None)
    assert model.rowCount() == project.n_cells
    with pytest.raises(ValueError, match="qc filter"):
        model.set_filter(qc="maybe")


def test_panel_combo_boxes_filter(qtbot, project):
    panel = GalleryPanel()
    qtbot.addWidget(panel)
    panel.set_project(project)
    labels, qc = project.cells["given_label"], project.cells["qc_pass"]
    assert panel.label_combo.count() == len(project.classes) + 2
    panel.qc_combo.setCurrentIndex(panel.qc_combo.findData("rejected"))
    assert panel.model.rowCount() == (~qc).sum()
    panel.label_combo.setCurrentIndex(panel.label_combo.findText("monocyte"))
    assert panel.model.rowCount() == ((labels == 2) & ~qc).sum()
    assert panel.count_label.text() == f"{panel.model.rowCount()} of 300 objects"
    panel.set_project(project)  # a new project resets the filters
    assert panel.model.rowCount() == 300 and panel.qc_combo.currentData() == "all"


def test_sort_key_seam_orders_rows(project):
    model = GalleryModel(project, sort_key=lambda cells: -cells["diameter_um"])
    ids = [model.index(r).data(CellRowRole) for r in range(model.rowCount())]
    d = project.cells["diameter_um"][ids]
    assert np.all(np.diff(d) <= 0)
    model.set_sort_key(None)
    assert model.index(0).data(QcPassRole) is True


def test_100k_rows_are_cheap_and_data_touches_only_its_row(fake_project_100k):
    fake = fake_project_100k
    t0 = time.perf_counter()
    model = GalleryModel(fake, cache_size=10)
    t_set = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(1000):
        assert model.rowCount() == 100_000
    t_count = (time.perf_counter() - t0) / 1000
    assert t_set < 0.5 and t_count < 1e-4
    assert fake.reads == []  # nothing loaded eagerly

    index = model.index(54_321)
    cell = index.data(CellRowRole)
    assert index.data(DISPLAY) and index.data(TOOLTIP)
    assert fake.reads == []  # text roles do not read patches
    assert isinstance(index.data(DECORATION), QPixmap)
    assert fake.reads == [cell]
    index.data(DECORATION)
    assert fake.reads == [cell]  # cached

    for r in range(50):
        model.index(r).data(DECORATION)
    assert model.cached_rows == 10  # LRU bound

    t0 = time.perf_counter()
    model.set_filter(qc="rejected", label=3)
    assert time.perf_counter() - t0 < 0.2
    qc, labels = fake.cells["qc_pass"], fake.cells["given_label"]
    assert model.rowCount() == ((labels == 3) & ~qc).sum()


def test_view_at_100k_renders_only_visible_thumbnails(qtbot, fake_project_100k):
    fake = fake_project_100k
    model = GalleryModel(fake)
    view = GalleryView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.resize(800, 600)
    t0 = time.perf_counter()
    view.show()
    qtbot.waitExposed(view)
    qtbot.wait(100)
    elapsed = time.perf_counter() - t0
    assert 0 < len(fake.reads) < 300, len(fake.reads)
    assert set(fake.reads) <= set(model.order[:300].tolist())
    assert elapsed < 5

    last = model.index(model.rowCount() - 1)
    qtbot.waitUntil(lambda: view.visualRect(last).isValid(), timeout=5000)  # batched layout
    selected = []
    view.cellSelected.connect(selected.append)
    assert view.select_cell(int(model.order[99_000]))
    assert selected == [int(model.order[99_000])]
    np.testing.assert_array_equal(view.selected_cells(), [model.order[99_000]])
    qtbot.wait(50)
    assert any(r in set(model.order[98_000:].tolist()) for r in fake.reads[-50:])
