"""Version-1 project files (one HDF5 file) migrate to the project folder when opened.

``tests/fixtures/v1-project.h5`` was written by the version-1 code itself
(``tests/fixtures/make_v1_project.py``): label edits, an active model, predictions, an
explanation cache and an embedding model. All of it must survive.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import Project, export_cells_csv, project_info
from hemalens.engine.project.bundle import is_project_folder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = FIXTURES / "v1-project.h5"


@pytest.fixture()
def v1(tmp_path) -> Path:
    path = tmp_path / "old.h5"
    shutil.copyfile(V1, path)
    return path


def _v1_contents(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        hist = f["labels/history"]
        return {
            "given": f["cells/given_label"][()],
            "original": f["cells/original_label"][()],
            "diameter": f["cells/diameter_um"][()],
            "images": f["patches/images"][()],
            "raw": f["patches/raw"][()],
            "classes": [c.decode() if isinstance(c, bytes) else c
                        for c in f["labels/classes"][()]],
            "history_users": [u.decode() if isinstance(u, bytes) else u
                              for u in hist["user"][()]],
            "history_cells": hist["cell_id"][()],
            "predicted": f["predictions/lenet5-v1/predicted"][()],
            "confidence": f["predictions/lenet5-v1/confidence"][()],
            "embedding": f["embeddings/tml-v1/embedding"][()],
            "weights": {k: v[()] for k, v in f["models/lenet5-v1/weights"].items()},
        }


def test_a_version_1_project_opens_migrated_in_place(v1, tmp_path):
    before = _v1_contents(v1)
    with Project.open(v1) as p:  # migrates
        assert p.schema_version == 2
        np.testing.assert_array_equal(p.cells["given_label"], before["given"])
        np.testing.assert_array_equal(p.cells["original_label"], before["original"])
        np.testing.assert_array_equal(p.cells["diameter_um"], before["diameter"])
        np.testing.assert_array_equal(p.images(np.arange(p.n_cells)), before["images"])
        np.testing.assert_array_equal(p.raw(3), before["raw"][3])
        assert p.classes == before["classes"]  # "eosinophil" was added by a v1 relabel
        h = p.history()
        assert h["user"].tolist() == before["history_users"]
        np.testing.assert_array_equal(h["cell_id"], before["history_cells"])
        assert set(h["reason"].tolist()) == {"review queue", "second look", ""}
        assert (p.decisions() == 0).all()
    assert v1.is_dir() and is_project_folder(v1)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["old.h5"]  # no backup, no temp


def test_migrated_derived_data_is_all_there(v1):
    from hemalens.engine.embed.store import load_embedding_model, read_embeddings
    from hemalens.engine.explain.store import read_explanations
    from hemalens.engine.models.store import list_models, load_model
    from hemalens.engine.review.predictions import read_predictions

    before = _v1_contents(v1)
    model, meta = load_model(v1)
    assert meta["name"] == "lenet5-v1" and meta["active"] and meta["temperature"] == 1.5
    for k, w in before["weights"].items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), w)
    assert [m["name"] for m in list_models(v1)] == ["lenet5-v1"]
    cols, attrs = read_predictions(v1)
    np.testing.assert_array_equal(cols["predicted"], before["predicted"])
    np.testing.assert_array_equal(cols["confidence"], before["confidence"])
    assert attrs["model"] == "lenet5-v1"
    maps, targets, computed = read_explanations(v1, "lenet5-v1", "saliency",
                                                model_created=meta["created"])
    assert computed.nonzero()[0].tolist() == [0, 5, 9, 29]
    want = np.load(FIXTURES / "v1-saliency.npy")
    np.testing.assert_allclose(maps[[0, 5, 9, 29]], want, rtol=2e-3, atol=1e-3 * np.abs(want).max())
    assert targets[[0, 5, 9, 29]].tolist() == [0, 1, 2, 0]
    net, emeta = load_embedding_model(v1)
    assert emeta["name"] == "tml-v1" and net.spec.dim == 8
    X, _, _, _ = read_embeddings(v1)
    assert X.shape[1] == 8 and np.isfinite(X).all()
    info = project_info(v1)
    assert info["schema_version"] == 2 and info["history_rows"] == 4
    assert info["explanations"] == {"lenet5-v1/saliency": 4}
    assert info["predictions"] == ["lenet5-v1"] and info["embeddings"] == ["tml-v1"]


def test_export_after_migration_has_the_current_labels(v1, tmp_path):
    before = _v1_contents(v1)
    out = tmp_path / "cells.csv"
    assert export_cells_csv(v1, out) == 30
    import csv

    rows = list(csv.DictReader(out.open()))
    names = [*before["classes"], ""]
    assert [r["given_label"] for r in rows] == [names[c] for c in before["given"]]


def test_a_read_only_folder_refuses_in_one_line(v1, monkeypatch):
    from hemalens.engine.project import migrate

    if os.geteuid() == 0:  # root writes anywhere: stand in for the permission check
        monkeypatch.setattr(migrate, "_can_write", lambda path: False)
    os.chmod(v1.parent, 0o555)
    try:
        with pytest.raises(ProjectError, match="version-1 project in a read-only place"):
            Project.open(v1)
    finally:
        os.chmod(v1.parent, 0o755)
    assert v1.is_file()


def test_a_damaged_version_1_file_is_left_as_it_was(v1):
    with h5py.File(v1, "r+") as f:
        del f["cells/original_label"]
    data = v1.read_bytes()
    with pytest.raises(ProjectError, match="old.h5"):
        Project.open(v1)
    assert v1.is_file() and v1.read_bytes() == data
    assert sorted(q.name for q in v1.parent.iterdir()) == ["old.h5"]
