"""The embedding view: linked lasso, bulk edits, PLI edits, preview, retraining, QPI maps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSES, add_predictions, blob_patches, make_cells, select_position

N_RUNS = 4


def write_regions_project(path, n: int = 160, seed: int = 0):
    """A phase project whose cells come from four runs (regions), so three folds fit."""
    from hemalens.engine.project.store import ProjectWriter

    rng = np.random.default_rng(seed)
    cells = make_cells(n, rng, n_inputs=N_RUNS)
    cells["input_id"] = ((np.arange(n) // 5) % N_RUNS).astype(np.int32)  # every class in every run
    images = blob_patches(n, rng)
    # make the classes look different, so an embedding has something to learn
    labels = cells["given_label"]
    images = np.clip(images * (0.5 + 0.15 * np.maximum(labels, 0))[:, None, None], 0, 1)
    with ProjectWriter(path, patch_kind="phase", patch_shape=images.shape[1:], classes=CLASSES,
                       overwrite=True) as w:
        for k in range(N_RUNS):
            w.add_input({"file": f"run{k}/frames.tif", "modality": "phase", "run": f"run{k}",
                         "pixel_size_um": 0.3, "status": "ok", "n_frames": 10})
        w.append(cells, images, raw=images * 3.8 + 0.2)
    return path


def add_embedding(path, name: str = "tml-test", seed: int = 0) -> np.ndarray:
    """Store a made-up embedding model whose map puts each class in its own cluster."""
    from hemalens.engine.embed.network import EmbeddingNet, EmbeddingSpec
    from hemalens.engine.embed.store import save_embedding_model
    from hemalens.engine.project.store import Project

    with Project.open(path) as p:
        labels = np.asarray(p.cells["given_label"], np.int64)
        qc = np.asarray(p.cells["qc_pass"], bool)
    rng = np.random.default_rng(seed)
    n = labels.size
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], float)
    proj = centres[np.where(labels >= 0, labels, 4)] + rng.normal(0, 1.0, (n, 2))
    proj[~qc] = np.nan
    fold = np.where(labels >= 0, np.arange(n) % 3, -1)
    emb = np.c_[proj, rng.normal(0, 0.1, (n, 6))].astype(np.float32)
    net = EmbeddingNet(EmbeddingSpec(backbone="small", dim=8, input_size=32))
    save_embedding_model(path, name, net, embedding=emb, projection=proj, fold=fold,
                         class_names=CLASSES, config={"loss": "tml", "types": ["c"]},
                         metrics={"mean_f1": 0.5, "std_f1": 0.1, "folds": []})
    return proj


@pytest.fixture
def embedded_project(predicted_project):
    """The small predicted project with one embedding model."""
    add_embedding(predicted_project)
    return predicted_project


@pytest.fixture
def win(qtbot):
    from hemalens.gui.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()


def circle(c, r, k=64):
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.c_[c[0] + r * np.cos(t), c[1] + r * np.sin(t)]


def test_lasso_selects_the_same_cells_in_the_gallery_and_back(win, embedded_project):
    assert win.open_project(embedded_project)
    view = win.embedding
    assert view.map is not None and view.map.key == "embedding:tml-test"
    xy = view.display_xy
    r = 2.5
    ids = view.select_polygon(circle((10, 0), r))  # the eosinophil cluster
    d = np.linalg.norm(xy - [10, 0], axis=1)
    inside, outside = d < r * 0.995, d > r  # a 64-gon lies between r·cos(π/64) and r
    assert set(view.map.ids[inside]) <= set(ids.tolist())
    assert not set(view.map.ids[outside]) & set(ids.tolist())
    assert ids.size > 10
    s = win.session
    assert np.array_equal(s.selection, np.sort(ids))
    assert np.array_equal(np.flatnonzero(win.gallery.grid._selected), np.sort(ids))
    # and back: a click in the gallery selects one cell, which the map then shows selected
    cell = select_position(win, 3)
    assert np.flatnonzero(view.plot.selected).tolist() == [int(view.pos_of[cell])]
    assert not view.owns_selection
    view.show_hover(int(view.pos_of[cell]))  # hover: the cell's thumbnail and id
    assert view.hover.isVisible() and not view.hover.pixmap().isNull()
    assert f"cell {cell}" in view.status.text()


def test_bulk_relabel_from_the_view_is_undone_from_the_gallery(win, embedded_project):
    assert win.open_project(embedded_project)
    view, s = win.embedding, win.session
    ids = view.select_polygon(circle((0, 10), 3.0))
    before = s.labels[ids].copy()
    assert np.all(before == 2) and ids.size > 5
    view.colour_combo.setCurrentIndex(view.colour_combo.findData("given"))
    win.review.class_actions[3].trigger()  # key 4: lymphocyte, on the whole selection
    assert np.all(s.labels[ids] == 3)
    assert np.all(view.plot.cat[view.pos_of[ids]] == 3)  # the map recoloured
    win.gallery.grid.setFocus()
    win.review.undo.trigger()
    assert np.array_equal(s.labels[ids], before)
    assert np.all(view.plot.cat[view.pos_of[ids]] == 2)


def test_pli_drag_changes_stored_targets_and_survives_reopening(win, embedded_project):
    from hemalens.engine.embed.pli import load_targets

    assert win.open_project(embedded_project)
    view = win.embedding
    ids = view.select_polygon(circle((10, 10), 3.0))
    rows = view.pos_of[ids]
    old = view.map.xy[rows].copy()
    view.set_tool("edit")
    view._edit_drag((10.0, 10.0), (13.0, 11.0), False, False)  # live, not saved yet
    assert not view.edit_list
    view._edit_drag((10.0, 10.0), (13.0, 11.0), False, True)
    path = view._pli_file()
    cell_ids, targets, mask = load_targets(path)
    moved = np.isin(cell_ids, ids)
    assert np.array_equal(mask, moved)
    assert np.allclose(targets[moved], old + [3.0, 1.0])
    # two wheel steps make one contract edit; undo removes both at once
    view.plot.vb.editWheel.emit(1, (0.0, 0.0))
    view.plot.vb.editWheel.emit(1, (0.0, 0.0))
    assert [e.kind for e in view.edit_list] == ["shift", "contract"]
    assert view.edit_list[1].factor == pytest.approx(1 - 0.9 * 0.9)
    win.undo_stack.undo()
    assert [e.kind for e in view.edit_list] == ["shift"]
    view.contract(-0.5)  # expand
    assert view.edit_list[-1].factor == pytest.approx(-0.5)
    view.remove_edit(1)
    assert len(view.edit_list) == 1
    shown = view.display_xy.copy()
    win.close_project()
    assert win.open_project(embedded_project)
    view = win.embedding
    assert [e.kind for e in view.edit_list] == ["shift"]
    assert np.allclose(view.display_xy, shown)
    assert np.allclose(view.display_xy[view.pos_of[ids]], old + [3.0, 1.0])
    assert view.edits.list.count() == 1


def test_pli_edits_of_large_maps_are_saved_and_read_in_the_background(
        win, qtbot, embedded_project, monkeypatch):
    from hemalens.engine.embed.pli import load_targets
    from hemalens.gui import embedding_view

    monkeypatch.setattr(embedding_view, "SYNC_PLI_MAX", 0)  # every map counts as large
    assert win.open_project(embedded_project)
    view = win.embedding
    ids = view.select_polygon(circle((10, 0), 3.0))
    view.shift((1.0, 0.0))
    view.rotate(0.5)  # a second save while the first may still run: they queue
    qtbot.waitUntil(lambda: not view.saving, timeout=10000)
    cell_ids, _targets, mask = load_targets(view._pli_file())
    assert set(cell_ids[mask]) == set(ids.tolist())
    shown = view.display_xy.copy()
    win.close_project()
    assert win.open_project(embedded_project)
    view = win.embedding
    qtbot.waitUntil(lambda: len(view.edit_list) == 2, timeout=10000)
    assert np.allclose(view.display_xy, shown) and np.allclose(view.plot.xy, shown)


def test_preview_advances_and_stops(win, qtbot, embedded_project):
    assert win.open_project(embedded_project)
    view = win.embedding
    start = view.display_xy.copy()
    job = view.start_preview({"iterations": 400, "types": ("c", "s")})
    assert job is not None
    qtbot.waitUntil(lambda: len(view.preview_frames) >= 3, timeout=20000)
    moved = view.plot.xy.copy()
    assert not np.allclose(moved, start)  # the labelled cells moved
    assert [f["iteration"] for f in view.preview_frames[:3]] == [0, 1, 2]
    view.stop_preview()
    qtbot.waitUntil(lambda: not job.is_running, timeout=10000)
    assert job.state == "cancelled"
    assert len(view.preview_frames) < 401
    view.end_preview()
    assert np.allclose(view.plot.xy, start)


def test_tiny_retrain_completes_and_another_is_cancelled(win, qtbot, tmp_path):
    path = write_regions_project(tmp_path / "regions.hemalens")
    add_predictions(path)
    add_embedding(path)
    assert win.open_project(path)
    view = win.embedding
    ids = view.select_polygon(circle((0, 0), 3.0))
    view.shift((2.0, 0.0))
    assert ids.size and view.edit_list
    options = {"epochs": 2, "folds": 3, "backbone": "small", "input_size": 32,
               "svm_every": 1, "batch_size": 32}
    job = view.retrain_with_edits(options)
    assert job is not None
    with qtbot.waitSignal(job.ended, timeout=60000) as ended:
        pass
    assert ended.args == ["done"], job.message
    assert view.runs.epochs and {"tml", "val_f1", "fold"} <= set(view.runs.epochs[-1])
    qtbot.waitUntil(lambda: "changed neighbourhood" in view.runs.compare.text(), timeout=20000)
    assert len(view.runs.after.listDataItems()) >= 2  # the new map, one item per class
    names = [r["name"] for r in view.runs.rows]
    assert len(names) == 2 and view.map.key == f"embedding:{names[0]}"
    assert view.runs.rows[0]["pli"]
    # another run, cancelled: nothing is added
    job2 = view.retrain({"loss": "tml", **options, "epochs": 50})
    qtbot.waitUntil(lambda: bool(view.runs.epochs), timeout=30000)
    view.cancel_training()
    with qtbot.waitSignal(job2.ended, timeout=30000) as ended2:
        pass
    assert ended2.args == ["cancelled"]
    view.refresh_sources()
    assert len(view.runs.rows) == 2
    # an earlier run can be made active again
    view.make_active("tml-test")
    assert view.map.key == "embedding:tml-test"


def test_qpi_feature_map_is_computed_and_invalidated_by_a_new_model(win, qtbot, tmp_path):
    import shutil

    from hemalens.engine.embed.view import map_sources, read_feature_map
    from hemalens.engine.train import TrainConfig
    from hemalens.engine.workflows.train import train_project

    path = tmp_path / "qpi.hemalens"
    shutil.copytree(write_regions_project(tmp_path / "src.hemalens", n=120), path)
    train_project(path, TrainConfig(arch="lenet5", epochs=1, seed=0), name="lenet-a", passes=2)
    assert win.open_project(path)
    view = win.embedding
    assert view.map is None and view.compute_button.isVisible()
    job = view.compute_feature_map()
    with qtbot.waitSignal(job.ended, timeout=60000) as ended:
        pass
    assert ended.args == ["done"], job.message
    qtbot.waitUntil(lambda: view.map is not None, timeout=5000)
    assert view.map.key == "features:lenet-a" and view.map.ids.size > 50
    assert read_feature_map(path, "lenet-a") is not None
    # a new classifier with the same name invalidates the map; a new active one has none
    train_project(path, TrainConfig(arch="lenet5", epochs=1, seed=1), name="lenet-a", passes=2)
    assert read_feature_map(path, "lenet-a") is None
    train_project(path, TrainConfig(arch="lenet5", epochs=1, seed=2), name="lenet-b", passes=2)
    win._derived_written()
    view.refresh_sources()
    feats = [s for s in map_sources(path) if s["kind"] == "features"]
    assert feats == [{**feats[0], "name": "lenet-b", "ready": False}]
    assert view.map is None


def test_lasso_at_100k_points_selects_exactly_the_points_inside(qtbot):
    """Correctness at 100k points (speed is the benchmark's business)."""
    from hemalens.engine.embed.view import points_in_polygon
    from hemalens.gui.embedding_scatter import MapPlot

    rng = np.random.default_rng(3)
    xy = rng.normal(size=(100_000, 2))
    t = np.linspace(0, 2 * np.pi, 11)[:-1]  # a star: concave, so a box test is not enough
    rad = np.where(np.arange(10) % 2 == 0, 1.5, 0.6)
    poly = np.c_[rad * np.cos(t), rad * np.sin(t)]
    got = points_in_polygon(xy, poly)
    # even-odd ray casting, written out independently
    x, y = xy[:, 0:1], xy[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-300) + x0)
    expected = np.flatnonzero(crosses.sum(axis=1) % 2 == 1)
    assert got.size > 1000 and np.array_equal(got, expected)
    plot = MapPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 400)
    plot.show()
    plot.set_points(xy, (xy[:, 0] > 0).astype(int), np.array([[200, 0, 0, 255],
                                                              [0, 0, 200, 255]]))
    assert plot.mode == "density"
    plot.vb.setRange(xRange=(0, 0.2), yRange=(0, 0.2), padding=0)
    assert plot.mode == "scatter"
    shown = sum(len(item.data) for item in plot.items)
    inside = ((xy[:, 0] >= 0) & (xy[:, 0] <= 0.2) & (xy[:, 1] >= 0) & (xy[:, 1] <= 0.2)).sum()
    assert shown == inside


def test_demo_state_selects_and_edits(win, embedded_project):
    assert win.open_project(embedded_project)
    assert win.embedding.demo_state()
    assert win.session.selection.size > 0 and len(win.embedding.edit_list) == 1
    win.undo_stack.undo()  # leave the project as it was


def test_keys_in_the_map_relabel_but_digits_typed_in_a_field_do_not(win, qtbot,
                                                                     embedded_project):
    from PySide6.QtCore import Qt

    assert win.open_project(embedded_project)
    view, s = win.embedding, win.session
    win.docks["embedding"].raise_()
    ids = view.select_polygon(circle((0, 10), 3.0))
    before = s.labels[ids].copy()
    view.plot.setFocus()
    qtbot.keyClick(view.plot, Qt.Key.Key_4)  # the gallery's key, on the map's selection
    assert np.all(s.labels[ids] == 3)
    qtbot.keyClick(view.plot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(s.labels[ids], before)
    view.tabs.setCurrentWidget(view.interventions)
    box = view.interventions.iterations
    box.setFocus()
    box.selectAll()
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_4)
    assert box.value() == 4
    assert np.array_equal(s.labels[ids], before)
