"""training_data on a real project file; an interrupted training leaves the project alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_digest

from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.models import load_model, save_model
from hemalens.engine.project import Project, ProjectWriter, relabel
from hemalens.engine.review.session import ReviewSession
from hemalens.engine.train import TrainConfig, train_classifier, training_data

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def make_project(path: Path) -> dict:
    """Two inputs (donors A and B), 30 cells each; some QC-rejected, some unlabelled.

    Each patch's mean encodes its cell id, so rows can be checked against ids.
    """
    truth = {"labels": [], "qc": [], "donor": []}
    with ProjectWriter(path, patch_kind="phase", patch_shape=(50, 50), classes=CLASSES,
                       image_dtype="float32") as w:  # fmt: skip
        n0 = 0
        for donor, run_label in (("A", 0), ("B", 2)):
            iid = w.add_input({"file": f"{donor}.tif", "donor": donor, "run": donor})
            n = 30
            ids = np.arange(n0, n0 + n)
            labels = np.where(ids % 2 == 0, run_label, run_label + 1).astype(np.int16)
            labels[ids % 10 == 3] = -1  # unlabelled
            qc = ids % 7 != 5
            images = np.broadcast_to((ids / 100.0)[:, None, None], (n, 50, 50)).astype(np.float32)
            w.append(
                {
                    "input_id": np.full(n, iid),
                    "given_label": labels,
                    "original_label": labels,
                    "qc_pass": qc,
                    "qc_reason": np.where(qc, b"", b"too_small"),
                },
                images,
            )
            truth["labels"] += labels.tolist()
            truth["qc"] += qc.tolist()
            truth["donor"] += [donor] * n
            n0 += n
        # a third input whose cells have no donor and no label at all
        iid = w.add_input({"file": "C.tif"})
        w.append({"input_id": np.full(2, iid)}, np.zeros((2, 50, 50), np.float32))
    return {k: np.array(v) for k, v in truth.items()}


@pytest.fixture()
def project(tmp_path):
    path = tmp_path / "P.hemalens"
    return path, make_project(path)


def test_qc_passed_labelled_cells_only(project):
    path, truth = project
    images, labels, cell_ids, donors, names = training_data(path)
    use = truth["qc"] & (truth["labels"] >= 0)
    np.testing.assert_array_equal(cell_ids, np.flatnonzero(use))
    assert names == CLASSES
    np.testing.assert_array_equal(labels, truth["labels"][use])
    np.testing.assert_array_equal(donors, truth["donor"][use])
    assert images.dtype == np.float32 and images.shape == (use.sum(), 50, 50)
    np.testing.assert_allclose(images.mean(axis=(1, 2)), cell_ids / 100.0, rtol=1e-6)
    assert labels.dtype == np.int64 and cell_ids.dtype == np.int64


def test_relabels_are_honoured(project):
    path, truth = project
    relabel(path, [0, 2], "eosinophil", user="t", reason="review")  # 0 -> 3
    relabel(path, [4], None, user="t")  # label removed: not trained on
    relabel(path, [3], "monocyte", user="t")  # an unlabelled cell gains a label
    with Project.open(path) as p:
        images, labels, cell_ids, _, names = training_data(p)
        assert p.cells["original_label"][0] == 0  # the original label is not what counts
    assert names == CLASSES
    lab = dict(zip(cell_ids.tolist(), labels.tolist(), strict=True))
    assert lab[0] == 3 and lab[2] == 3 and lab[3] == 1
    assert 4 not in lab


def test_unused_classes_are_dropped_and_codes_compacted(project):
    path, truth = project
    ids_mono = np.flatnonzero(truth["labels"] == 1)
    relabel(path, ids_mono, "lymphocyte", user="t")  # nobody is a monocyte any more
    relabel(path, [0], "basophil", user="t")  # a new class appended to /labels/classes
    _, labels, cell_ids, _, names = training_data(path)
    assert names == ["lymphocyte", "neutrophil", "eosinophil", "basophil"]
    lab = dict(zip(cell_ids.tolist(), labels.tolist(), strict=True))
    assert lab[0] == 3  # basophil
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]


def test_projects_without_training_data(tmp_path):
    empty = tmp_path / "E.hemalens"
    with ProjectWriter(empty, patch_kind="phase", patch_shape=(50, 50), classes=CLASSES):
        pass
    with pytest.raises(ProjectError, match="has no cells; nothing to train on") as err:
        training_data(empty)
    assert str(empty) in str(err.value)
    unlabelled = tmp_path / "U.hemalens"
    with ProjectWriter(unlabelled, patch_kind="phase", patch_shape=(50, 50)) as w:
        w.append({}, np.zeros((3, 50, 50), np.float32))
    with pytest.raises(ProjectError, match="no QC-passed cell with a label"):
        training_data(unlabelled)
    rgb = tmp_path / "R.hemalens"
    with ProjectWriter(rgb, patch_kind="rgb", patch_shape=(8, 8), classes=["a"]) as w:
        w.append({"given_label": np.zeros(2, int)}, np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ProjectError, match="training needs phase patches"):
        training_data(rgb)


def test_interrupted_training_leaves_project_byte_identical(project):
    path, _ = project
    before = tree_digest(path)
    files = sorted(path.parent.iterdir())
    images, labels, cell_ids, donors, names = training_data(path)
    progress = CallbackProgress()
    timer = threading.Timer(0.05, progress.cancel)
    timer.start()
    try:
        with pytest.raises(Cancelled):
            train_classifier(images, labels, len(names),
                             TrainConfig(epochs=100000, batch_size=4, device="cpu"),
                             progress=progress)  # fmt: skip
    finally:
        timer.cancel()
    with pytest.raises(ValueError):  # an exception during training: nothing written either
        train_classifier(images * np.nan, labels, len(names), TrainConfig(device="cpu"))
    assert tree_digest(path) == before
    assert sorted(path.parent.iterdir()) == files


def test_train_then_save_with_cell_ids(project):
    path, _ = project
    images, labels, cell_ids, donors, names = training_data(path)
    cfg = TrainConfig(epochs=1, device="cpu", fractions=(0.6, 0.2, 0.2))
    res = train_classifier(images, labels, len(names), cfg)
    save_model(path, "m", res, names, cell_ids=cell_ids)
    model, meta = load_model(path)
    stored = np.concatenate([meta["split"][k] for k in ("train", "val", "test")])
    np.testing.assert_array_equal(np.sort(stored), cell_ids)  # cell ids, not row numbers
    np.testing.assert_array_equal(meta["split"]["test"], cell_ids[res.split["test"]])
    # the project's cells are still readable and the model predicts on them
    with Project.open(path) as p:
        out = model(model.preprocess(p.images(meta["split"]["test"])))
    assert out.shape == (meta["split"]["test"].size, 4)


def test_a_relabelled_test_cell_stays_in_test(project):
    """Review edits never move a cell between train, validation and test."""
    from hemalens.engine.train import stable_split

    path, truth = project
    with Project.open(path) as p:
        _, _, ids0, _, _ = training_data(p)
        before = stable_split(p, ids0, seed=3)
    part0 = {int(ids0[r]): k for k, rows in before.items() for r in rows}
    test_cells = [c for c, k in part0.items() if k == "test"][:3]
    train_cells = [c for c, k in part0.items() if k == "train"][:2]
    relabel(path, test_cells, "eosinophil", user="t")  # relabelled test cells
    relabel(path, train_cells, None, user="t")  # no longer trained on
    excluded = [c for c, k in part0.items() if k == "val"][:2]
    with ReviewSession.open(path, user="t") as s:
        s.exclude(excluded)  # "not classed"
    with Project.open(path) as p:
        _, labels, ids1, _, names = training_data(p)
        after = stable_split(p, ids1, seed=3)
    part1 = {int(ids1[r]): k for k, rows in after.items() for r in rows}
    assert set(part1) == set(part0) - set(train_cells) - set(excluded)
    assert all(part1[c] == part0[c] for c in part1)  # nobody moved
    assert all(part1[c] == "test" for c in test_cells)
    assert names[labels[np.searchsorted(ids1, test_cells[0])]] == "eosinophil"
    with Project.open(path) as p:  # another seed gives another split
        assert not all(np.array_equal(a, b) for a, b in zip(
            stable_split(p, ids1, seed=4).values(), after.values(), strict=True))


def test_stable_parts_are_stratified_and_per_cell(project):
    from hemalens.engine.train import stable_parts

    strata = np.repeat([0, 1, 2, -1], [50, 30, 20, 7])
    parts = stable_parts(strata, seed=0)
    for c, n in ((0, 50), (1, 30), (2, 20)):
        counts = np.bincount(parts[strata == c], minlength=3)
        np.testing.assert_allclose(counts / n, [0.7, 0.2, 0.1], atol=1 / n + 1e-9)
    # one stratum's assignment does not depend on the other strata
    alone = stable_parts(strata[strata == 1], seed=0)
    np.testing.assert_array_equal(alone, parts[strata == 1])
    assert stable_parts(np.array([5]), seed=0).tolist() == [0]
    assert sorted(stable_parts(np.array([5, 5]), seed=0).tolist()) == [0, 1]
