"""Models in the project file: named float32 tensors, metadata, active model, atomicity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import tree_digest

from hemalens.engine.errors import ProjectError
from hemalens.engine.explain.store import write_explanations
from hemalens.engine.models import (
    ModelSpec,
    build_model,
    delete_model,
    list_models,
    load_model,
    save_model,
    set_active_model,
    update_model,
)
from hemalens.engine.models import store as store_mod
from hemalens.engine.project import Project, ProjectWriter
from hemalens.engine.project.derived import item_names
from hemalens.engine.project.model_index import active_model
from hemalens.engine.review.predictions import write_predictions
from hemalens.engine.train import TrainConfig, TrainResult

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def make_project(path: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    with ProjectWriter(path, patch_kind="phase", patch_shape=(50, 50), classes=CLASSES) as w:
        iid = w.add_input({"file": "a.tif", "donor": "A", "run": "r1"})
        labels = np.arange(n) % 4
        w.append(
            {"input_id": np.full(n, iid), "given_label": labels, "original_label": labels},
            rng.random((n, 50, 50), dtype=np.float32),
        )
    return path


def fake_result(arch: str = "lenet5", seed: int = 0, size: int = 32) -> TrainResult:
    spec = ModelSpec(arch, 4, 0.25 if arch == "lenet5" else 0.5, size)
    torch.manual_seed(seed)
    return TrainResult(
        model=build_model(spec).eval(),
        spec=spec,
        split={"train": np.arange(0, 14), "val": np.arange(14, 20), "test": np.arange(20, 24)},
        history=[{"epoch": 1, "val_macro_f1": 0.5}, {"epoch": 2, "val_macro_f1": 0.75}],
        best_epoch=2,
        val_macro_f1=0.75,
        seconds=1.5,
        device="cpu",
        config=TrainConfig(arch=arch, epochs=2),
    )


@pytest.fixture()
def project(tmp_path) -> Path:
    return make_project(tmp_path / "P.hemalens")


def test_save_load_round_trip(project):
    res = fake_result()
    cell_ids = np.arange(24)[::-1] + 100  # rows of the training arrays -> cell ids
    save_model(project, "m1", res, CLASSES, temperature=1.8, extra={"test_f1": 0.9},
               cell_ids=cell_ids)  # fmt: skip
    model, meta = load_model(project)
    for key, t in res.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], t), key
    x = model.preprocess(torch.rand(3, 50, 50))
    torch.testing.assert_close(model(x), res.model(x), rtol=0, atol=0)
    assert not model.training and model.spec == res.spec
    assert meta["name"] == "m1" and meta["active"] is True
    assert meta["class_names"] == CLASSES
    assert meta["spec"] == res.spec.to_dict()
    assert meta["temperature"] == 1.8
    assert meta["history"] == res.history
    assert meta["metrics"]["val_macro_f1"] == 0.75 and meta["metrics"]["best_epoch"] == 2
    assert meta["metrics"]["n_train"] == 14
    assert meta["extra"] == {"test_f1": 0.9}
    assert meta["train_config"]["epochs"] == 2 and meta["train_config"]["arch"] == "lenet5"
    assert meta["split_ids"] == "cell_id"
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(meta["split"][k], cell_ids[res.split[k]])
        assert meta["split"][k].dtype == np.int64
    assert meta["trained_on"]["patch_shape"] == [50, 50]
    assert meta["created"].endswith("+00:00") and meta["hemalens_version"]
    # the project itself still opens and is unchanged otherwise
    with Project.open(project) as p:
        assert p.n_cells == 24


def test_file_layout_is_plain_named_float32_tensors(project):
    res = fake_result()
    save_model(project, "m1", res, CLASSES)
    assert active_model(project) == "m1"
    with h5py.File(project / "derived" / "models" / "m1.h5", "r") as g:
        assert set(g["weights"]) == set(res.model.state_dict())
        for key, ds in g["weights"].items():
            assert ds.dtype == np.float32, key
            assert ds.shape == tuple(res.model.state_dict()[key].shape)
        for k in ("train", "val", "test"):
            assert g["split"][k].dtype == np.int64
        assert json.loads(g.attrs["spec_json"]) == res.spec.to_dict()
        assert math.isnan(g.attrs["temperature"])  # not calibrated yet
        assert g.attrs["split_ids"] == "index"
        # nothing opaque anywhere: every dataset is numeric
        kinds = []
        g.visititems(lambda n, o: kinds.append(o.dtype.kind) if isinstance(o, h5py.Dataset)
                     else None)  # fmt: skip
        assert set(kinds) <= {"f", "i"}
    _, meta = load_model(project, "m1")
    assert meta["temperature"] is None


def test_alexnet_round_trip_through_project(tmp_path):
    project = make_project(tmp_path / "A.hemalens")
    res = fake_result("alexnet", size=64)
    save_model(project, "alex", res, CLASSES)
    model, meta = load_model(project, "alex")
    assert meta["spec"]["input_size"] == 64
    for key, t in res.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], t), key


def test_several_models_and_active_switching(project):
    save_model(project, "a", fake_result(seed=1), CLASSES)
    save_model(project, "b", fake_result(seed=2), CLASSES, make_active=False)
    rows = {r["name"]: r for r in list_models(project)}
    assert set(rows) == {"a", "b"} and rows["a"]["active"] and not rows["b"]["active"]
    assert rows["b"]["arch"] == "lenet5" and rows["b"]["metrics"]["val_macro_f1"] == 0.75
    assert load_model(project)[1]["name"] == "a"
    set_active_model(project, "b")
    model_b, meta = load_model(project)
    assert meta["name"] == "b" and meta["active"]
    want = fake_result(seed=2).model.state_dict()
    assert all(torch.equal(model_b.state_dict()[k], v) for k, v in want.items())
    assert [r["name"] for r in list_models(project) if r["active"]] == ["b"]
    save_model(project, "c", fake_result(seed=3), CLASSES)  # new models become active
    assert load_model(project)[1]["name"] == "c"
    # replacing a model of the same name keeps one entry
    save_model(project, "c", fake_result(seed=4), CLASSES, temperature=2.0)
    assert [r["name"] for r in list_models(project)].count("c") == 1
    assert load_model(project, "c")[1]["temperature"] == 2.0
    delete_model(project, "c")
    names = [r["name"] for r in list_models(project)]
    assert names == ["a", "b"]
    assert load_model(project)[1]["name"] in names  # some remaining model is active
    assert active_model(project) in names


def test_deleting_a_model_drops_its_predictions_and_explanations(project):
    save_model(project, "a", fake_result(seed=1), CLASSES)
    save_model(project, "b", fake_result(seed=2), CLASSES)
    n = 24
    for name in ("a", "b"):  # what predict / explain store
        write_predictions(project, name, {"predicted": np.zeros(n, np.int16)}, {})
        write_explanations(project, name, "saliency", [0, 1], np.ones((2, 50, 50)), [0, 0],
                           model_created="t")
    delete_model(project, "b")
    assert item_names(project, "predictions") == ["a"]
    assert item_names(project, "explanations") == ["a"]
    assert item_names(project, "models") == ["a"]


def test_update_model_sets_temperature_and_merges_metrics(project):
    save_model(project, "m", fake_result(), CLASSES, extra={"a": 1})
    update_model(project, "m", temperature=2.5, metrics={"test_f1": 0.8}, extra={"b": 2})
    meta = load_model(project, "m")[1]
    assert meta["temperature"] == 2.5
    assert meta["metrics"]["test_f1"] == 0.8 and meta["metrics"]["val_macro_f1"] == 0.75
    assert meta["extra"] == {"a": 1, "b": 2}
    update_model(project, "m", metrics={"x": 1})  # temperature not given: kept
    assert load_model(project, "m")[1]["temperature"] == 2.5
    update_model(project, "m", temperature=None)  # None clears it
    assert load_model(project, "m")[1]["temperature"] is None
    with pytest.raises(ValueError, match="temperature must be a positive"):
        update_model(project, "m", temperature=-1.0)


def test_large_metadata_fits(project):
    big = {"history": list(range(30000))}  # > 64 kB of JSON: needs dense attribute storage
    save_model(project, "m", fake_result(), CLASSES, extra=big)
    assert load_model(project, "m")[1]["extra"] == big


def test_project_without_models_raises_project_error(project):
    assert list_models(project) == []
    with pytest.raises(ProjectError, match="has no trained model") as err:
        load_model(project)
    assert str(project) in str(err.value) and "\n" not in str(err.value)
    with Project.open(project) as p:  # an open Project is accepted too
        with pytest.raises(ProjectError, match="has no trained model"):
            load_model(p)
    save_model(project, "m", fake_result(), CLASSES)
    with pytest.raises(ProjectError, match="no model named 'x'; models: \\['m'\\]"):
        load_model(project, "x")
    with pytest.raises(ProjectError, match="no model named"):
        set_active_model(project, "x")


def test_not_a_project(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ProjectError, match="not a HemaLens project"):
        load_model(bad)
    with pytest.raises(ProjectError, match="not a HemaLens project"):
        save_model(bad, "m", fake_result(), CLASSES)
    assert bad.read_bytes() == b"not hdf5"


def test_bad_arguments_write_nothing(project):
    before = tree_digest(project)
    with pytest.raises(ValueError, match="3 class names for a model with 4 outputs"):
        save_model(project, "m", fake_result(), CLASSES[:3])
    with pytest.raises(ValueError, match="invalid model name"):
        save_model(project, "a/b", fake_result(), CLASSES)
    with pytest.raises(ValueError, match="temperature"):
        save_model(project, "m", fake_result(), CLASSES, temperature=0.0)
    with pytest.raises(ValueError, match="extra must be JSON serialisable"):
        save_model(project, "m", fake_result(), CLASSES, extra={"f": object()})
    with pytest.raises(ValueError, match="indexes beyond"):
        save_model(project, "m", fake_result(), CLASSES, cell_ids=np.arange(5))
    assert tree_digest(project) == before


def test_failure_while_writing_leaves_project_byte_identical(project, monkeypatch):
    save_model(project, "old", fake_result(seed=1), CLASSES)
    before = tree_digest(project)
    real = store_mod.write_weights

    def flaky(g, weights):
        real(g, weights)  # the weights are in the temporary file ...
        raise OSError(28, "No space left on device")  # ... when the disk fills up

    monkeypatch.setattr(store_mod, "write_weights", flaky)
    with pytest.raises(ProjectError, match="no space left on device; the project is unchanged"):
        save_model(project, "new", fake_result(seed=2), CLASSES)
    assert tree_digest(project) == before
    assert [p.name for p in (project / "derived" / "models").iterdir()] == ["old.h5"]


def test_fitted_arrays_are_stored_with_the_model(project):
    means = np.arange(12, dtype=np.float64).reshape(3, 4)
    save_model(project, "m", fake_result(), CLASSES, arrays={"ood_means": means})
    meta = load_model(project, "m")[1]
    np.testing.assert_array_equal(meta["arrays"]["ood_means"], means)
    update_model(project, "m", arrays={"ood_precision": np.eye(4)})
    arrays = load_model(project, "m")[1]["arrays"]
    assert set(arrays) == {"ood_means", "ood_precision"}
    np.testing.assert_array_equal(arrays["ood_precision"], np.eye(4))
    with pytest.raises(ValueError, match="must be numeric"):
        update_model(project, "m", arrays={"bad": np.array(["a"])})
