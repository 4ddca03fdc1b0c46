"""Predictions in the project: atomic writes, reading, the default model, CSV export."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
from conftest import tree_digest

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.export import export_cells_csv
from hemalens.engine.project.store import Project, ProjectWriter
from hemalens.engine.review import predictions as predmod
from hemalens.engine.review.predictions import read_predictions, write_predictions

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]
N, K = 12, 4


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "p.hemalens"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(8, 8), classes=CLASSES) as w:
        w.add_input({"file": "a.tif"})
        w.append({"input_id": np.zeros(N, int), "given_label": rng.integers(0, K, N)},
                 rng.random((N, 8, 8)))
    return path


def fake_predictions(seed=0, n=N):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, K))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1).astype(np.int16)
    pred[3] = -1  # e.g. a cell that failed QC
    conf = probs.max(1)
    conf[3] = np.nan
    cols = {
        "predicted": pred,
        "confidence": conf,  # float64: stored as float32
        "probs": probs,
        "mc_mean": probs.astype(np.float32),
        "mc_std": rng.random((n, K)),
        "conf_mc_std": rng.random(n).astype(np.float32),
    }
    attrs = {"class_names": CLASSES, "measure": "mc_std", "temperature": 1.7,
             "mc_passes": 100, "created": "2024-01-01T00:00:00.000+00:00"}
    return cols, attrs


def test_none_without_predictions(project):
    assert read_predictions(project) is None
    assert read_predictions(project, "lenet5") is None
    with Project.open(project) as p:
        assert read_predictions(p) is None


def test_round_trip(project):
    cols, attrs = fake_predictions()
    write_predictions(project, "lenet5-a", cols, attrs)
    got, meta = read_predictions(project)
    assert set(got) == set(cols)
    assert got["predicted"].dtype == np.int16 and got["predicted"].shape == (N,)
    np.testing.assert_array_equal(got["predicted"], cols["predicted"])
    for name in ("confidence", "probs", "mc_mean", "mc_std", "conf_mc_std"):
        assert got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], np.asarray(cols[name], np.float32))
    assert got["probs"].shape == (N, K) and np.isnan(got["confidence"][3])
    assert meta == {**attrs, "model": "lenet5-a"}
    with Project.open(project) as p:  # an open Project works too
        got2, _ = read_predictions(p, "lenet5-a")
        np.testing.assert_array_equal(got2["probs"], got["probs"])
    with h5py.File(project / "derived/predictions/lenet5-a.h5", "r") as g:  # plain HDF5
        assert json.loads(g.attrs["attrs_json"])["temperature"] == 1.7
        assert g.attrs["n_cells"] == N
        assert "description" in g["probs"].attrs and "description" in g["conf_mc_std"].attrs


def test_created_filled_in_and_replace(project):
    cols, _ = fake_predictions(0)
    write_predictions(project, "m", cols, {"class_names": CLASSES})
    _, meta = read_predictions(project, "m")
    assert meta["created"].endswith("+00:00") and meta["model"] == "m"
    # same model again: replaced; a column left out disappears
    cols2, attrs2 = fake_predictions(1)
    del cols2["mc_std"]
    write_predictions(project, "m", cols2, attrs2)
    got, meta = read_predictions(project, "m")
    assert "mc_std" not in got and meta["measure"] == "mc_std"
    np.testing.assert_array_equal(got["probs"], cols2["probs"].astype(np.float32))


def test_writing_predictions_never_touches_the_imported_data(tmp_path):
    n = 5000
    path = tmp_path / "big.hemalens"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(4, 4), classes=CLASSES) as w:
        w.append({"given_label": np.zeros(n, int)}, np.zeros((n, 4, 4)))
    cells = (path / "cells.h5").stat()
    for seed in (0, 1, 2, 3):
        write_predictions(path, "m", *fake_predictions(seed, n=n))
    got, _ = read_predictions(path)
    np.testing.assert_array_equal(got["mc_std"], fake_predictions(3, n=n)[0]["mc_std"]
                                  .astype(np.float32))
    after = (path / "cells.h5").stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        cells.st_ino, cells.st_mtime_ns, cells.st_size)
    files = list((path / "derived/predictions").iterdir())
    assert [f.name for f in files] == ["m.h5"]  # replaced whole: no growth, no leftovers


def test_default_model_is_active_else_latest(project):
    cols, attrs = fake_predictions()
    write_predictions(project, "a", cols, {**attrs, "created": "2024-01-02T00:00:00.000+00:00"})
    write_predictions(project, "b", cols, {**attrs, "created": "2024-01-03T00:00:00.000+00:00"})
    assert read_predictions(project)[1]["model"] == "b"
    from hemalens.engine.project.bundle import ProjectPaths
    from hemalens.engine.project.model_index import set_active_setting

    paths = ProjectPaths(project)
    (project / "derived/models/a.h5").write_bytes(b"")  # a model "a" exists and is active
    set_active_setting(paths, "a")
    assert read_predictions(project)[1]["model"] == "a"
    (project / "derived/models/c.h5").write_bytes(b"")  # the active model has none yet
    set_active_setting(paths, "c")
    assert read_predictions(project)[1]["model"] == "b"


def test_wrong_length_and_bad_input_write_nothing(project):
    before = tree_digest(project)
    cols, attrs = fake_predictions(n=N + 1)
    with pytest.raises(ValueError, match=r"'predicted' has shape \(13,\).*project has 12 cells"):
        write_predictions(project, "m", cols, attrs)
    good, _ = fake_predictions()
    with pytest.raises(ValueError, match="JSON"):
        write_predictions(project, "m", good, {"bad": object()})
    with pytest.raises(ValueError, match="invalid model name"):
        write_predictions(project, "a/b", good, attrs)
    with pytest.raises(ValueError, match="invalid model name"):
        write_predictions(project, " ", good, attrs)
    with pytest.raises(ValueError, match="must be numeric"):
        write_predictions(project, "m", {"x": np.array(["a"] * N)}, attrs)
    with pytest.raises(ValueError, match="no prediction columns"):
        write_predictions(project, "m", {}, attrs)
    with pytest.raises(ValueError, match="expected"):
        write_predictions(project, "m", {"x": np.zeros((N, 2, 2))}, attrs)
    assert tree_digest(project) == before
    with pytest.raises(ProjectError, match="no such project"):
        write_predictions(project.parent / "none.hemalens", "m", good, attrs)


def test_failure_midway_leaves_the_file_intact(project, monkeypatch):
    cols, attrs = fake_predictions(0)
    write_predictions(project, "m", cols, attrs)
    before = tree_digest(project)
    real = h5py.Group.create_dataset
    calls = []

    def failing(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:  # the first new dataset is written, then the disk fills up
            raise OSError(28, "No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    cols2, _ = fake_predictions(1)
    cols2 = {f"new_{k}": v for k, v in cols2.items()}  # new names: forces create_dataset
    with pytest.raises(ProjectError, match="m.h5: cannot save: no space left on device"):
        write_predictions(project, "m", cols2, attrs)
    monkeypatch.undo()
    assert len(calls) == 2
    assert tree_digest(project) == before
    assert [p.name for p in (project / "derived/predictions").iterdir()] == ["m.h5"]
    got, _ = read_predictions(project, "m")
    assert set(got) == set(cols)


def test_corrupt_predictions_are_reported(project):
    cols, attrs = fake_predictions()
    write_predictions(project, "m", cols, attrs)
    with h5py.File(project / "derived/predictions/m.h5", "r+") as f:
        del f["confidence"]
        f.create_dataset("confidence", data=np.zeros(5, np.float32))
    with pytest.raises(ProjectError, match=r"m\.h5: damaged predictions.*confidence"):
        read_predictions(project)
    (project / "derived/predictions/m.h5").write_bytes(b"garbage")
    with pytest.raises(ProjectError, match=r"m\.h5: damaged prediction file"):
        read_predictions(project)


def test_csv_export_includes_predictions(project, tmp_path):
    out = tmp_path / "cells.csv"
    export_cells_csv(project, out)
    with open(out, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert "predicted_label" not in header and "confidence" not in header
    cols, attrs = fake_predictions()
    write_predictions(project, "m", cols, attrs)
    assert export_cells_csv(project, out) == N
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    extra = ["predicted_label", "confidence", *(f"prob_{c}" for c in CLASSES)]
    assert header[-len(extra):] == extra and header[0] == "cell_id"
    col = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    names = [*CLASSES, ""]
    assert col["predicted_label"] == [names[c] for c in cols["predicted"]]
    assert col["predicted_label"][3] == "" and col["confidence"][3] == ""
    conf = np.asarray(cols["confidence"], np.float32)
    ok = np.arange(N) != 3
    np.testing.assert_array_equal(np.array(col["confidence"])[ok].astype(np.float32), conf[ok])
    for k, c in enumerate(CLASSES):
        np.testing.assert_array_equal(np.array(col[f"prob_{c}"], np.float32),
                                      cols["probs"][:, k].astype(np.float32))


def test_module_documents_the_columns():
    doc = predmod.__doc__
    for name in ("predicted", "confidence", "probs", "mc_mean", "mc_median", "mc_std",
                 "conf_<measure>", "class_names", "measure", "temperature"):
        assert f"``{name}``" in doc, name


def test_predictions_of_a_model_replaced_meanwhile_are_refused(project):
    """A write that finds the project changed under it fails loudly instead of storing
    predictions that no longer belong to the model."""
    from hemalens.engine.project.bundle import ProjectPaths
    from hemalens.engine.project.derived import write_item

    def model(stamp):
        return lambda g: g.attrs.update({"created": stamp})

    write_item(ProjectPaths(project), "models", "m", model("t1"))
    cols, attrs = fake_predictions()
    write_predictions(project, "m", cols, {**attrs, "model_created": "t1"})
    write_item(ProjectPaths(project), "models", "m", model("t2"))  # retrained meanwhile
    with pytest.raises(ProjectError, match="replaced by a newer training"):
        write_predictions(project, "m", cols, {**attrs, "model_created": "t1"})
    assert read_predictions(project, "m")[1]["model_created"] == "t1"  # the old ones stay


def test_a_relabel_and_a_predictions_write_never_block_or_lose_each_other(project):
    import threading

    from hemalens.engine.project.bundle import project_lock
    from hemalens.engine.project.labels import relabel

    cols, attrs = fake_predictions()
    with project_lock(project):  # as if a long write held the derived lock right now
        t = threading.Thread(target=write_predictions, args=(project, "m", cols, attrs))
        t.start()
        t.join(0.3)
        assert t.is_alive()  # the write waits for the lock ...
        relabel(project, [0], "basophil", user="ana")  # ... an edit does not
    t.join(10)
    assert not t.is_alive()
    with Project.open(project) as p:
        assert p.label_names()[0] == "basophil"
        assert read_predictions(p)[1]["model"] == "m"
