"""ProjectWriter / Project: round trips, validation, opening errors, plain-HDF5 layout."""

from __future__ import annotations

import json
from datetime import datetime

import h5py
import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import store
from hemalens.engine.project.schema import (
    CELL_COLUMNS,
    FILE_FORMAT,
    INPUT_COLUMNS,
    SCHEMA_VERSION,
)
from hemalens.engine.project.store import Project, ProjectWriter

S = 12
CLASSES = ["lymphocyte", "monocyte", "neutrophil"]


def random_cells(rng: np.random.Generator, n: int, n_inputs: int, n_classes: int) -> dict:
    """A full CELL_COLUMNS table with random values of the right dtypes."""
    cells = {name: np.zeros(n, np.dtype(dtype)) for name, (dtype, _) in CELL_COLUMNS.items()}
    for arr in cells.values():
        k = arr.dtype.kind
        if k == "f":
            arr[:] = rng.normal(10, 3, n)
            arr[rng.random(n) < 0.1] = np.nan
        elif k == "b":
            arr[:] = rng.random(n) < 0.7
        elif k == "S":
            arr[:] = rng.choice([b"", b"too_small", b"not_round", b"border"], n)
        else:
            arr[:] = rng.integers(0, 200, n)
    cells["input_id"][:] = rng.integers(0, n_inputs, n)
    cells["given_label"][:] = rng.integers(-1, n_classes, n)
    cells["original_label"][:] = rng.integers(-1, n_classes, n)
    cells["cell_id"][:] = 999  # must be ignored
    return cells


def write_phase_project(path, *, seed=0, sizes=(7, 0, 40, 13), image_dtype="float16"):
    """Write a project and return the ground truth the writer was given."""
    rng = np.random.default_rng(seed)
    inputs = [
        {"file": "run 1/a,b.tif", "path": "/data/run 1/a,b.tif", "modality": "phase",
         "pixel_size_um": 0.12, "wavelength_nm": 532.0, "donor": "D1", "n_frames": 3},
        {"file": "ünïcode.npy", "modality": "hologram", "pixel_size_um": 0.2},
    ]
    truth: dict = {"cells": [], "images": [], "raw": [], "score": []}
    settings = {"threshold": 0.3, "sizes": [1, 2], "nested": {"a": np.float32(1.5)}}
    with ProjectWriter(
        path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES, settings=settings,
        meta={"origin": "test"}, normalisation={"lo": -0.5, "hi": 4.0, "method": "fixed"},
        image_dtype=image_dtype,
    ) as w:
        ids = [w.add_input(r) for r in inputs]
        assert ids == [0, 1]
        w.update_input(1, status="failed", error="bad file")
        for b, n in enumerate(sizes):
            cells = random_cells(rng, n, len(inputs), len(CLASSES))
            images = rng.random((n, S, S))  # float64 in [0, 1]
            raw = rng.normal(0, 2, (n, S, S)).astype(np.float32)
            if b == 2:  # an extra column that appears late: earlier rows read NaN
                cells["score"] = rng.random(n)
            truth["score"].append(cells.get("score", np.full(n, np.nan)))
            w.append(cells, images, raw)
            truth["cells"].append(cells)
            truth["images"].append(images)
            truth["raw"].append(raw)
        assert w.n_cells == sum(sizes)
    truth = {k: np.concatenate(v) if k != "cells" else v for k, v in truth.items()}
    truth["inputs"], truth["settings"] = inputs, settings
    return truth


@pytest.mark.parametrize("flush_rows", [5, 2048])
def test_round_trip_phase(tmp_path, monkeypatch, flush_rows):
    monkeypatch.setattr(store, "_FLUSH_ROWS", flush_rows)  # exercise one and many flushes
    path = tmp_path / "p.hemalens"
    t = write_phase_project(path)
    n = len(t["images"])
    with Project.open(path) as p:
        assert p.n_cells == len(p) == n == 60
        assert p.patch_kind == "phase" and p.patch_shape == (S, S)
        assert p.classes == CLASSES
        assert p.schema_version == SCHEMA_VERSION
        assert p.settings == {"threshold": 0.3, "sizes": [1, 2], "nested": {"a": 1.5}}
        assert p.meta == {"origin": "test"}
        assert p.normalisation == {"lo": -0.5, "hi": 4.0, "method": "fixed"}
        assert datetime.fromisoformat(p.created) <= datetime.fromisoformat(p.modified)
        assert list(p.cells)[: len(CELL_COLUMNS)] == list(CELL_COLUMNS)
        for name, (dtype, _) in CELL_COLUMNS.items():
            got = p.cells[name]
            assert got.dtype == np.dtype(dtype), name
            if name == "cell_id":
                np.testing.assert_array_equal(got, np.arange(n))
            elif name == "given_label":  # before any edit, the label is the imported one
                want = np.concatenate([c["original_label"] for c in t["cells"]])
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                want = np.concatenate([c[name] for c in t["cells"]])
                np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(p.cells["score"], t["score"])
        assert np.isnan(p.cells["score"][:7]).all()
        # inputs: defaults filled, update_input applied, strings round-trip (unicode, commas)
        assert list(p.inputs) == list(INPUT_COLUMNS)
        assert p.inputs["file"].tolist() == ["run 1/a,b.tif", "ünïcode.npy"]
        assert p.inputs["status"].tolist() == ["ok", "failed"]
        assert p.inputs["error"].tolist() == ["", "bad file"]
        assert p.inputs["n_frames"].tolist() == [3, 0]
        np.testing.assert_array_equal(p.inputs["pixel_size_um"], [0.12, 0.2])
        assert np.isnan(p.inputs["wavelength_nm"][1])
        # patches: float16 storage, float32 out, exactly the float16 rounding of the input
        want = t["images"].astype(np.float16).astype(np.float32)
        for i in (0, 6, 7, 30, n - 1):
            img = p.image(i)
            assert img.dtype == np.float32 and img.shape == (S, S)
            np.testing.assert_array_equal(img, want[i])
            np.testing.assert_array_equal(p.raw(i), t["raw"][i])
        np.testing.assert_allclose(p.image(3), t["images"][3], atol=2**-11)
        idx = [9, 2, 2, 59, 10, 11, 12, 0]
        np.testing.assert_array_equal(p.images(idx), want[idx])
        np.testing.assert_array_equal(p.images(np.arange(n)), want)
        mask = np.zeros(n, bool)
        mask[[3, 40]] = True
        np.testing.assert_array_equal(p.images(mask), want[[3, 40]])
        assert p.images([]).shape == (0, S, S)
        # labels
        codes = p.cells["given_label"]
        names = p.label_names()
        assert names.shape == (n,)
        assert all(nm == (CLASSES[c] if c >= 0 else "") for nm, c in zip(names, codes, strict=True))
        assert p.label_names([-1, 2]).tolist() == ["", "neutrophil"]
        hist = p.history()
        assert {k: len(v) for k, v in hist.items()} == dict.fromkeys([*store.HISTORY_COLUMNS,
                                                                     "op"], 0)
        assert p.read_only  # opened "r": edits go through relabel() or a review session


def test_float32_images_are_exact(tmp_path):
    t = write_phase_project(tmp_path / "p.hemalens", image_dtype="float32", sizes=(5,))
    with Project.open(tmp_path / "p.hemalens") as p:
        np.testing.assert_array_equal(p.images(np.arange(5)), t["images"].astype(np.float32))


def test_round_trip_rgb_and_defaults(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (9, S, S, 3), dtype=np.uint8)
    with ProjectWriter(tmp_path / "r.h5", patch_kind="rgb", patch_shape=(S, S)) as w:
        b = w.class_code("blast")
        assert w.class_code("erythroblast") == 1 and w.class_code("blast") == b == 0
        w.append({"x": np.arange(4.0)}, imgs[:4])  # only one column given: the rest defaults
        w.append({"x": np.arange(5), "given_label": [1, 0, -1, 1, 1]}, imgs[4:].astype(np.int64))
        with pytest.raises(ValueError, match="only stored for phase"):
            w.append({"x": [1.0]}, imgs[:1], raw=np.zeros((1, S, S)))
    with Project.open(tmp_path / "r.h5") as p:
        assert p.patch_kind == "rgb" and p.patch_shape == (S, S, 3)
        assert p.classes == ["blast", "erythroblast"]
        np.testing.assert_array_equal(p.images(np.arange(9)), imgs)
        assert p.image(8).dtype == np.uint8
        assert p.raw(0) is None
        c = p.cells
        np.testing.assert_array_equal(c["x"], [0, 1, 2, 3, 0, 1, 2, 3, 4])
        np.testing.assert_array_equal(c["given_label"], [-1, -1, -1, -1, 1, 0, -1, 1, 1])
        # a label given at import is the original label
        np.testing.assert_array_equal(c["original_label"], c["given_label"])
        assert (c["input_id"] == -1).all()
        assert c["qc_pass"].all() and (c["qc_reason"] == b"").all()
        assert np.isnan(c["diameter_um"]).all() and (c["frame"] == 0).all()
        assert p.label_names()[4:6].tolist() == ["erythroblast", "blast"]
        assert p.inputs["file"].shape == (0,)


def test_empty_project(tmp_path):
    with ProjectWriter(tmp_path / "e.h5", patch_kind="phase", patch_shape=(S, S)):
        pass
    with Project.open(tmp_path / "e.h5") as p:
        assert p.n_cells == 0 and p.classes == [] and p.settings == {}
        assert p.images([]).shape == (0, S, S)
        with pytest.raises(IndexError):
            p.image(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cells": {"x": np.zeros(3)}, "images": np.zeros((2, S, S))}, r"cells\['x'\] has shape"),
        ({"cells": {}, "images": np.zeros((2, S, S + 1))}, "images have shape"),
        ({"cells": {}, "images": np.zeros((2, S, S), np.uint8)}, "must be float"),
        ({"cells": {"given_label": [0, 3]}, "images": np.zeros((2, S, S))}, "codes outside"),
        ({"cells": {"original_label": [-2, 0]}, "images": np.zeros((2, S, S))}, "codes outside"),
        ({"cells": {"input_id": [0, 1]}, "images": np.zeros((2, S, S))}, "add_input first"),
        ({"cells": {"frame": [0.5, 1]}, "images": np.zeros((2, S, S))}, "must be integers"),
        ({"cells": {"frame": [0, 2**40]}, "images": np.zeros((2, S, S))}, "outside the int32"),
        ({"cells": {"qc_pass": [0, 2]}, "images": np.zeros((2, S, S))}, "must be boolean"),
        ({"cells": {"qc_reason": ["x" * 17, ""]}, "images": np.zeros((2, S, S))}, "longer than"),
        ({"cells": {"x": ["a", "b"]}, "images": np.zeros((2, S, S))}, "must be numeric"),
        ({"cells": {"note": ["a", "b"]}, "images": np.zeros((2, S, S))}, "numeric or bool"),
        ({"cells": {"a/b": [1, 2]}, "images": np.zeros((2, S, S))}, "invalid column"),
        ({"cells": {}, "images": np.zeros((2, S, S)), "raw": np.zeros((2, S))}, "raw has shape"),
    ],
)
def test_append_validation(tmp_path, kwargs, match):
    path = tmp_path / "v.h5"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=["a", "b"]) as w:
        with pytest.raises(ValueError, match=match):
            w.append(**kwargs)
        assert w.n_cells == 0
        w.append({"x": [1.0]}, np.zeros((1, S, S)))  # the writer is still usable
    with Project.open(path) as p:
        assert p.n_cells == 1


def test_raw_given_always_or_never(tmp_path):
    with ProjectWriter(tmp_path / "a.h5", patch_kind="phase", patch_shape=(S, S)) as w:
        w.append({}, np.zeros((2, S, S)), np.zeros((2, S, S)))
        with pytest.raises(ValueError, match="every batch"):
            w.append({}, np.zeros((2, S, S)))
    with ProjectWriter(tmp_path / "b.h5", patch_kind="phase", patch_shape=(S, S)) as w:
        w.append({}, np.zeros((2, S, S)))
        with pytest.raises(ValueError, match="always or never"):
            w.append({}, np.zeros((2, S, S)), np.zeros((2, S, S)))
    with Project.open(tmp_path / "b.h5") as p:
        assert p.raw(1) is None


def test_writer_argument_errors(tmp_path):
    p = tmp_path / "w.h5"
    with pytest.raises(ValueError, match="patch_kind"):
        ProjectWriter(p, patch_kind="grey", patch_shape=(S, S))
    with pytest.raises(ValueError, match="patch_shape"):
        ProjectWriter(p, patch_kind="phase", patch_shape=(S, S, 3))
    with pytest.raises(ValueError, match="JSON"):
        ProjectWriter(p, patch_kind="phase", patch_shape=(S, S), settings={"f": object()})
    with pytest.raises(ValueError, match="empty"):
        ProjectWriter(p, patch_kind="phase", patch_shape=(S, S), classes=["a", " "])
    with ProjectWriter(p, patch_kind="phase", patch_shape=(S, S)) as w:
        with pytest.raises(ValueError, match="unknown input columns"):
            w.add_input({"fiel": "typo.tif"})
        with pytest.raises(ValueError, match="no input"):
            w.update_input(0, status="failed")
    assert list(tmp_path.iterdir()) == [p]  # failed constructors left no temp files
    with pytest.raises(RuntimeError, match="closed"):
        w.append({}, np.zeros((1, S, S)))


def test_plain_hdf5_layout(tmp_path):
    """cells.h5 reads with bare h5py: numbers and strings only, documented groups."""
    path = tmp_path / "p.hemalens"
    write_phase_project(path, sizes=(20,))
    assert sorted(q.name for q in path.iterdir()) == [
        "README.txt", "annotations.sqlite", "cells.h5", "derived", "hemalens-project.json"]
    marker = json.loads((path / "hemalens-project.json").read_text())
    assert marker["format"] == FILE_FORMAT and marker["schema_version"] == SCHEMA_VERSION
    assert sorted(q.name for q in (path / "derived").iterdir()) == [
        "embeddings", "explanations", "maps", "models", "predictions"]
    seen = []
    with h5py.File(path / "cells.h5", "r") as f:
        assert f["meta"].attrs["format"] == FILE_FORMAT
        assert f["meta/schema_version"][()] == SCHEMA_VERSION == f["meta"].attrs["schema_version"]
        assert json.loads(f["meta"].attrs["settings_json"])["threshold"] == 0.3
        assert "given_label" not in f["cells"]  # the current label lives with the edits
        assert f["labels/classes"].asstr()[()].tolist() == CLASSES

        def visit(name, obj):
            for v in obj.attrs.values():
                assert isinstance(v, (str, bytes, np.generic, int, float)), (name, v)
            if isinstance(obj, h5py.Dataset):
                seen.append(name)
                dt = obj.dtype
                assert dt.kind in "biufS" or h5py.check_string_dtype(dt) is not None, (name, dt)
                assert dt.kind != "V" and h5py.check_ref_dtype(dt) is None
                obj[()]  # readable

        f.visititems(visit)
        imgs = f["patches/images"]
        assert imgs.dtype == np.float16 and imgs.chunks == (1, S, S)
        # bitshuffle+LZ4 (HDF5 filter 32008, registered by `import hdf5plugin`)
        assert "32008" in imgs._filters and imgs.maxshape == (None, S, S)
        assert f["patches/raw"].dtype == np.float32 and "32008" in f["patches/raw"]._filters
        assert f["cells/x"].maxshape == (None,) and f["cells/x"].compression == "gzip"
        assert f["cells/qc_pass"].dtype == bool
    assert {f"cells/{c}" for c in CELL_COLUMNS if c != "given_label"} <= set(seen)
    assert {f"inputs/{c}" for c in INPUT_COLUMNS} <= set(seen)


# ---- opening errors --------------------------------------------------------------------


def _truncated(tmp_path):
    p = tmp_path / "cut.hemalens"
    write_phase_project(p, sizes=(30,))
    data = (p / "cells.h5").read_bytes()
    (p / "cells.h5").write_bytes(data[: len(data) // 2])
    return p


def _foreign(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.arange(10)
    return p


def _newer(tmp_path):
    p = tmp_path / "newer.hemalens"
    write_phase_project(p, sizes=(3,))
    marker = json.loads((p / "hemalens-project.json").read_text())
    marker["schema_version"] = SCHEMA_VERSION + 1
    (p / "hemalens-project.json").write_text(json.dumps(marker))
    return p


def _text(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("cell_id,label\n1,a\n")
    return p


def _empty(tmp_path):
    p = tmp_path / "empty.h5"
    p.touch()
    return p


def _folder(tmp_path):
    p = tmp_path / "folder.hemalens"
    p.mkdir()
    (p / "holiday.jpg").write_bytes(b"x")
    return p


def _missing_column(tmp_path):
    p = tmp_path / "nocol.hemalens"
    write_phase_project(p, sizes=(3,))
    with h5py.File(p / "cells.h5", "r+") as f:
        del f["cells/diameter_um"]
    return p


def _missing_cells(tmp_path):
    p = tmp_path / "nocells.hemalens"
    write_phase_project(p, sizes=(3,))
    (p / "cells.h5").unlink()
    return p


def _bad_marker(tmp_path):
    p = tmp_path / "marker.hemalens"
    write_phase_project(p, sizes=(3,))
    (p / "hemalens-project.json").write_text("{not json")
    return p


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t: t / "nope.hemalens", "no such project"),
        (_empty, "file is empty"),
        (_truncated, "damaged project: the cell data is truncated"),
        (_foreign, "not a HemaLens project"),
        (_text, "not a HemaLens project (neither a project folder nor an HDF5"),
        (_newer, f"schema version {SCHEMA_VERSION + 1}, newer than"),
        (_folder, "folder is not a HemaLens project"),
        (_missing_column, "damaged project: cell columns ['diameter_um'] are missing"),
        (_missing_cells, "damaged project: cells.h5 is missing"),
        (_bad_marker, "damaged project: hemalens-project.json is unreadable"),
    ],
    ids=["missing", "empty", "truncated", "foreign", "text", "newer", "folder", "no-column",
         "no-cells", "bad-marker"],
)
def test_open_errors(tmp_path, make, reason):
    """One line naming the file; a damaged project is told apart from a foreign file."""
    path = make(tmp_path)
    with pytest.raises(ProjectError) as info:
        Project.open(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}") and reason in msg
    assert "\n" not in msg


def test_open_bad_mode_and_index(tmp_path):
    write_phase_project(tmp_path / "p.hemalens", sizes=(4,))
    with pytest.raises(ValueError, match="mode"):
        Project.open(tmp_path / "p.hemalens", mode="w")
    with Project.open(tmp_path / "p.hemalens") as p:
        for bad in (4, -1):
            with pytest.raises(IndexError):
                p.image(bad)
        with pytest.raises(IndexError):
            p.images([0, 4])
        with pytest.raises(ValueError, match="integers"):
            p.images([0.5])
        with pytest.raises(ValueError, match="codes outside"):
            p.label_names([3])


def test_append_copies_caller_arrays(tmp_path):
    """Appends are buffered: reusing the caller's arrays afterwards must not change the file."""
    x = np.arange(3, dtype=np.float32)
    qc = np.array([True, False, True])
    imgs = np.full((3, S, S), 0.25, np.float16)  # already the storage dtype
    raw = np.ones((3, S, S), np.float32)
    with ProjectWriter(tmp_path / "p.hemalens", patch_kind="phase", patch_shape=(S, S)) as w:
        w.append({"x": x, "qc_pass": qc}, imgs, raw)
        for a in (x, imgs, raw):
            a[...] = 9
        qc[:] = False
    with Project.open(tmp_path / "p.hemalens") as p:
        np.testing.assert_array_equal(p.cells["x"], [0, 1, 2])
        np.testing.assert_array_equal(p.cells["qc_pass"], [True, False, True])
        assert (p.images([0, 1, 2]) == 0.25).all() and (p.raw(2) == 1).all()
