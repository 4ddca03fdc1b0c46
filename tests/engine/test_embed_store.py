"""Embedding models in the project file, and the ``embed train`` workflow (issue 5, §5)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import tree_digest

from hemalens.engine.embed import store
from hemalens.engine.embed.network import EmbeddingNet, EmbeddingSpec
from hemalens.engine.embed.store import (
    list_embedding_models,
    load_embedding_model,
    read_embeddings,
    save_embedding_model,
)
from hemalens.engine.errors import ProjectError
from hemalens.engine.jobs import Cancelled
from hemalens.engine.project import Project, ProjectWriter, relabel
from hemalens.engine.workflows.embed import embed_train_project

CLASSES = ("blast", "lymphocyte", "monocyte")


def easy_cells(per_class: int = 24, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    colours = np.array([[90, 40, 140], [40, 80, 190], [190, 60, 70]], float)
    y = np.repeat(np.arange(3), per_class)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    x = np.empty((y.size, size, size, 3), np.uint8)
    for i, c in enumerate(y):
        r = (6.0, 9.0, 7.5)[c] + rng.normal(0, 0.5)
        inside = (yy**2 + xx**2 <= r**2)[..., None]
        img = np.where(inside, colours[c], [232, 218, 224]) + rng.normal(0, 8, (size, size, 3))
        x[i] = np.clip(img, 0, 255).astype(np.uint8)
    return x, y, np.arange(y.size) % 6


def make_project(path: Path, *, labels=None, qc=None, regions: int = 6, phase=False) -> Path:
    x, y, groups = easy_cells()
    groups = groups % regions
    labels = y if labels is None else labels
    qc = np.ones(y.size, bool) if qc is None else qc
    kind = "phase" if phase else "rgb"
    with ProjectWriter(path, patch_kind=kind, patch_shape=x.shape[1:3], classes=CLASSES) as w:
        for g in range(regions):
            w.add_input({"file": f"crops/r{g}", "run": f"region-{g}", "donor": f"slide-{g % 2}"})
        images = x.mean(-1).astype(np.float32) / 255 if phase else x
        w.append({"input_id": groups, "given_label": labels, "original_label": labels,
                  "qc_pass": qc}, images)
    return path


def digest(path: Path) -> str:
    return tree_digest(path)


@pytest.fixture()
def project(tmp_path):
    return make_project(tmp_path / "p.hemalens")


def small_net(seed: int = 0) -> EmbeddingNet:
    torch.manual_seed(seed)
    return EmbeddingNet(EmbeddingSpec("small", dim=16, input_size=32)).eval()


# -- store -----------------------------------------------------------------------------
def test_round_trip(project):
    net = small_net()
    n = 72
    emb = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    emb[5] = np.nan  # a cell that was not embedded
    proj = np.random.default_rng(1).normal(size=(n, 2))
    fold = np.arange(n) % 3
    save_embedding_model(project, "m1", net, embedding=emb, projection=proj, fold=fold,
                         class_names=CLASSES, config={"loss": "ali", "types": ["c", "s"]},
                         metrics={"mean_f1": 0.9, "std_f1": 0.01}, history=[[{"epoch": 1}]])
    loaded, meta = load_embedding_model(project)
    assert meta["name"] == "m1" and meta["class_names"] == list(CLASSES)
    assert meta["spec"] == net.spec.to_dict() and meta["history"] == [[{"epoch": 1}]]
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items(),
                               strict=True):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    x = easy_cells()[0][:3]
    np.testing.assert_array_equal(net.embed(x), loaded.embed(x))
    with h5py.File(project / "derived/embeddings/m1.h5", "r") as g:
        assert g["embedding"].dtype == np.float32 and g["embedding"].shape == (n, 16)
        assert g["projection"].dtype == np.float32 and g["fold"].dtype == np.int8
        assert all(ds.dtype == np.float32 for ds in g["weights"].values()
                   if ds.dtype.kind == "f")
        np.testing.assert_array_equal(g["embedding"][()], emb)
        np.testing.assert_array_equal(g["fold"][()], fold)
    rows = list_embedding_models(project)
    assert [(r["name"], r["loss"], r["dim"], r["mean_f1"]) for r in rows] == [
        ("m1", "ali", 16, 0.9)
    ]
    # read_embeddings: the labelled, QC-passed, embedded cells with their regions
    X, y, groups, names = read_embeddings(project)
    assert X.shape == (n - 1, 16) and names == list(CLASSES)
    keep = np.arange(n) != 5
    np.testing.assert_array_equal(X, emb[keep])
    np.testing.assert_array_equal(y, easy_cells()[1][keep])
    assert np.unique(groups).size == 6
    region = (np.arange(n) % 6)[keep]  # the same partition into regions, codes renamed
    assert {(int(a), int(b)) for a, b in zip(groups, region, strict=True)} == {
        (int(groups[region == r][0]), r) for r in range(6)
    }


def test_newest_is_default_and_names_are_checked(project):
    emb = np.zeros((72, 16), np.float32)
    save_embedding_model(project, "old", small_net(0), embedding=emb)
    save_embedding_model(project, "new", small_net(1), embedding=emb)
    assert load_embedding_model(project)[1]["name"] == "new"
    assert load_embedding_model(project, "old")[1]["name"] == "old"
    with pytest.raises(ProjectError, match="no embedding model 'x'") as err:
        load_embedding_model(project, "x")
    assert str(err.value).startswith(str(project)) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="invalid embedding model name"):
        save_embedding_model(project, "a/b", small_net(), embedding=emb)


def test_wrong_shapes_write_nothing(project):
    before = digest(project)
    with pytest.raises(ValueError, match=r"embedding has shape \(10, 16\), expected \(72, 16\)"):
        save_embedding_model(project, "m", small_net(), embedding=np.zeros((10, 16)))
    with pytest.raises(ValueError, match="projection"):
        save_embedding_model(project, "m", small_net(), embedding=np.zeros((72, 16)),
                             projection=np.zeros((72, 3)))
    assert digest(project) == before


def test_failed_write_leaves_the_file(project, monkeypatch):
    before = digest(project)
    real = store.write_weights

    def failing(g, weights):
        real(g, weights)  # the weights are in the temporary file ...
        raise OSError(28, "No space left on device")  # ... and then the disk fills up

    monkeypatch.setattr(store, "write_weights", failing)
    with pytest.raises(ProjectError, match="no space left on device"):
        save_embedding_model(project, "m", small_net(), embedding=np.zeros((72, 16)))
    assert digest(project) == before
    assert list((project / "derived/embeddings").iterdir()) == []  # no temp left
    with pytest.raises(ProjectError, match="has no embedding models"):
        load_embedding_model(project)


def test_foreign_files_raise_project_error_naming_them(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    for path in (plain, text, tmp_path / "missing.h5"):
        for call in (lambda p: load_embedding_model(p), lambda p: read_embeddings(p),
                     lambda p: list_embedding_models(p),
                     lambda p: save_embedding_model(p, "m", small_net(),
                                                    embedding=np.zeros((1, 16)))):
            with pytest.raises(ProjectError) as err:
                call(path)
            msg = str(err.value)
            assert msg.startswith(str(path)) and "\n" not in msg


# -- workflow --------------------------------------------------------------------------
KW = dict(loss="tml", folds=3, epochs=1, backbone="small", input_size=32, seed=0,
          device="cpu", batch_size=24)


def test_embed_train_project_stores_everything(tmp_path):
    qc = np.ones(72, bool)
    qc[0] = False  # a QC failure: never embedded
    labels = easy_cells()[1].copy()
    labels[1] = -1  # unlabelled but QC-passed: embedded, not trained on
    path = make_project(tmp_path / "p.hemalens", labels=labels, qc=qc)
    res = embed_train_project(path, name="emb", **KW)
    json.dumps(res)  # JSON-ready
    assert res["model"] == "emb" and res["cells"] == 70 and res["embedded"] == 71
    assert res["regions"] == 6 and len(res["folds"]) == 3
    assert set(res["classes"]) == set(CLASSES)
    with h5py.File(path / "derived/embeddings/emb.h5", "r") as g:
        emb, proj, fold = g["embedding"][()], g["projection"][()], g["fold"][()]
        assert json.loads(g.attrs["config_json"])["loss"] == "tml"
        assert json.loads(g.attrs["metrics_json"])["mean_f1"] == res["mean_f1"]
    assert emb.shape == (72, 256) and np.isnan(emb[0]).all() and np.isfinite(emb[1:]).all()
    assert np.isnan(proj[0]).all() and np.isfinite(proj[1:]).all()
    assert fold[0] == -1 and fold[1] == -1 and set(fold[2:]) == {0, 1, 2}
    net, meta = load_embedding_model(path)
    with Project.open(path) as p:
        np.testing.assert_allclose(net.embed(p.images([1, 2])), emb[[1, 2]], atol=1e-5)
    X, y, groups, names = read_embeddings(path)
    assert X.shape == (70, 256) and names == list(CLASSES)


def test_cancel_leaves_project_untouched(project):
    before = digest(project)

    class Cancel:
        n = 0

        def set_status(self, text):
            pass

        def set_progress(self, done, total):
            pass

        def is_cancelled(self):
            self.n += 1
            return self.n > 6

    with pytest.raises(Cancelled):
        embed_train_project(project, progress=Cancel(), **KW)
    assert digest(project) == before
    assert sorted(p.name for p in project.parent.iterdir()) == ["p.hemalens"]


def test_phase_projects_train_with_replicated_channels(tmp_path):
    path = make_project(tmp_path / "phase.hemalens", phase=True)
    res = embed_train_project(path, **KW)
    assert res["embedded"] == 72


@pytest.mark.parametrize(
    "setup, match",
    [
        ({"labels": np.full(72, -1)}, "no QC-passed cell with a label"),
        ({"labels": np.zeros(72, int)}, "needs at least two classes"),
        ({"regions": 2}, "group|region|fold"),
    ],
)
def test_bad_projects_raise_one_line(tmp_path, setup, match):
    path = make_project(tmp_path / "bad.hemalens", **setup)
    before = digest(path)
    with pytest.raises(ProjectError, match=match) as err:
        embed_train_project(path, **KW)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert digest(path) == before


def test_relabelled_cells_train_with_current_labels(tmp_path):
    path = make_project(tmp_path / "p.hemalens")
    relabel(path, np.arange(24), None, user="test")  # remove one class entirely
    res = embed_train_project(path, **KW)
    assert set(res["classes"]) == {"lymphocyte", "monocyte"} and res["cells"] == 48


def test_pli_session_file_joins_training(tmp_path):
    from hemalens.engine.embed.pli import PLIEdit, PLISession
    from hemalens.engine.workflows.embed import pli_rows

    path = make_project(tmp_path / "p.hemalens")
    pts = np.random.default_rng(0).normal(size=(72, 2))
    session = PLISession(pts, cell_ids=np.arange(72))
    session.add(PLIEdit(cells=np.arange(0, 72, 4), kind="shift", vector=(5.0, 0.0)))
    session.save(tmp_path / "pli.json")
    # rows follow the training cell ids: targets moved by the edit, the rest unmoved
    ids = np.array([3, 4, 8, 71])
    t, m = pli_rows(tmp_path / "pli.json", ids)
    np.testing.assert_allclose(t, pts[ids] + np.where(ids[:, None] % 4 == 0, [5.0, 0.0], 0))
    np.testing.assert_array_equal(m, [False, True, True, False])
    res = embed_train_project(path, pli_targets=tmp_path / "pli.json", **KW)
    assert res["alpha"] == 0.9 and res["loss"] == "tml"
    with pytest.raises(ValueError, match="pali or tml"):
        embed_train_project(path, pli_targets=tmp_path / "pli.json", **(KW | {"loss": "ali"}))
