"""CSV export and the project summary."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import numpy as np
import pytest

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import export
from hemalens.engine.project.export import CSV_LEAD_COLUMNS, export_cells_csv, project_info
from hemalens.engine.project.labels import relabel
from hemalens.engine.project.schema import CELL_COLUMNS
from hemalens.engine.project.store import ProjectWriter

S = 8
CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]
FILES = ["data/run 1/donor,A.tif", "ünïcode/holo.npz", "missing.tif"]


@pytest.fixture
def project(tmp_path):
    """18 cells from two inputs (a third failed), some rejected, some unlabelled."""
    rng = np.random.default_rng(3)
    n = 18
    truth = {
        "input_id": np.r_[np.zeros(10, int), np.ones(7, int), -1],
        "frame": rng.integers(0, 5, n),
        "x": rng.uniform(0, 500, n).astype(np.float32),
        "y": rng.uniform(0, 500, n).astype(np.float32),
        "diameter_um": rng.uniform(5, 15, n).astype(np.float32),
        "circularity": rng.uniform(0.6, 1, n).astype(np.float32),
        "qc_pass": np.array([True] * 12 + [False] * 6),
        "qc_reason": np.array([""] * 12 + ["border", "border", "too_small", "nan", "nan", "nan"]),
        "original_label": np.array([0, 0, 0, 1, 1, 2, -1, -1, 0, 2, 1, 0, -1, 0, 0, 1, 1, -1]),
        "score": rng.random(n),
    }
    truth["x"][4] = np.nan
    truth["given_label"] = truth["original_label"]  # before any edit
    path = tmp_path / "p.hemalens"
    with ProjectWriter(path, patch_kind="phase", patch_shape=(S, S), classes=CLASSES) as w:
        for f in FILES:
            w.add_input({"file": f, "path": "/abs/" + f})
        w.update_input(2, status="failed", error="cannot read")
        w.append(truth, rng.random((n, S, S)))
    return path, truth


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_csv_columns_and_values(project, tmp_path):
    path, t = project
    out = tmp_path / "cells.csv"
    assert export_cells_csv(path, out) == 18
    header, rows = read_csv(out)
    assert tuple(header[: len(CSV_LEAD_COLUMNS)]) == CSV_LEAD_COLUMNS
    assert set(header) == (set(CELL_COLUMNS) | {"file", "score"})
    assert len(header) == len(set(header)) and len(rows) == 18
    col = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    assert col["cell_id"] == [str(i) for i in range(18)]
    assert col["file"] == [FILES[0]] * 10 + [FILES[1]] * 7 + [""]  # as given; -1 -> ""
    assert col["frame"] == [str(v) for v in t["frame"]]
    # float32 values round-trip exactly through the text; NaN is an empty field
    assert col["x"][4] == ""
    ok = np.arange(18) != 4
    np.testing.assert_array_equal(np.array(col["x"])[ok].astype(np.float32), t["x"][ok])
    np.testing.assert_array_equal(np.array(col["diameter_um"], np.float32), t["diameter_um"])
    np.testing.assert_array_equal(np.array(col["score"], float), t["score"])
    assert col["area_um2"] == [""] * 18  # not given -> NaN -> empty
    assert col["qc_pass"] == ["true"] * 12 + ["false"] * 6
    assert col["qc_reason"] == t["qc_reason"].tolist()
    names = ["", *CLASSES]
    assert col["given_label"] == [names[c + 1] for c in t["given_label"]]
    assert col["original_label"] == col["given_label"]
    assert col["input_id"] == [str(v) for v in t["input_id"]]
    assert col["touches_border"] == ["false"] * 18


def test_csv_shows_relabelled_names(project, tmp_path):
    path, _ = project
    relabel(path, [6], "basophil", user="ana")
    export_cells_csv(path, tmp_path / "c.csv")
    header, rows = read_csv(tmp_path / "c.csv")
    assert rows[6][header.index("given_label")] == "basophil"
    assert rows[6][header.index("original_label")] == ""  # the import's label stays


def test_csv_is_atomic(project, tmp_path, monkeypatch):
    path, _ = project
    out = tmp_path / "cells.csv"
    out.write_text("cell_id,previous export\n")

    class BrokenWriter:
        def __init__(self, fh):
            self.fh = fh

        def writerow(self, row):
            self.fh.write("partial\n")

        def writerows(self, rows):
            raise OSError("disk full")

    monkeypatch.setattr(export.csv, "writer", BrokenWriter)
    with pytest.raises(OSError, match="disk full"):
        export_cells_csv(path, out)
    assert out.read_text() == "cell_id,previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv", "p.hemalens"]
    monkeypatch.undo()
    with pytest.raises(ProjectError, match="does not exist"):
        export_cells_csv(path, tmp_path / "nowhere" / "c.csv")
    with pytest.raises(ProjectError, match="no such project"):
        export_cells_csv(tmp_path / "none.hemalens", tmp_path / "c.csv")


def test_project_info_counts(project):
    path, t = project
    relabel(path, [6, 7], "monocyte", user="ana")
    info = project_info(path)
    json.dumps(info)  # JSON-ready
    assert info["project"] == str(path)
    assert info["schema_version"] == 2 and info["patch_kind"] == "phase"
    assert info["patch_shape"] == [S, S]
    assert info["objects"] == 18 and info["cells"] == 12
    assert info["rejected"] == {"border": 2, "nan": 3, "too_small": 1}
    assert info["inputs"] == 3 and info["failed_inputs"] == 1
    given = t["given_label"].copy()
    given[[6, 7]] = 1
    assert info["classes"] == {c: int((given == i).sum()) for i, c in enumerate(CLASSES)}
    assert info["classes"]["eosinophil"] == 0  # every class listed, even when empty
    assert info["labelled"] == int((given >= 0).sum()) == 16
    assert info["history_rows"] == 2
    parts = ("cells.h5", "annotations.sqlite", "hemalens-project.json")
    assert info["size_bytes"] >= sum((path / f).stat().st_size for f in parts)  # the folder
    assert info["decisions"]["relabelled"] == 2 and info["decisions"]["undecided"] == 16
    assert info["signed_off"] == [] and info["read_only"] is True
    assert datetime.fromisoformat(info["modified"]) >= datetime.fromisoformat(info["created"])
    assert set(info) >= {
        "project", "schema_version", "patch_kind", "objects", "cells", "rejected", "inputs",
        "failed_inputs", "classes", "labelled", "history_rows", "size_bytes", "created",
        "modified",
    }
    assert info["models"] == [] and info["active_model"] is None
    assert info["predictions"] == [] and info["explanations"] == {} and info["embeddings"] == []


def test_project_info_lists_stored_results(project):
    path, _ = project
    from hemalens.engine.explain.store import write_explanations
    from hemalens.engine.project.derived import write_item

    def stand_in(g):  # what train / predict / embed train store
        g.attrs["created"] = "2026-01-01T00:00:00+00:00"

    for kind, name in (("models", "m1"), ("predictions", "m1"), ("embeddings", "e1")):
        write_item(path, kind, name, stand_in)
    write_explanations(path, "m1", "lime", [0, 2], np.ones((2, S, S)), [0, 0],
                       model_created="x")
    info = project_info(path)
    assert info["models"] == ["m1"] and info["active_model"] == "m1"
    assert info["predictions"] == ["m1"] and info["embeddings"] == ["e1"]
    assert info["explanations"] == {"m1/lime": 2}


def test_project_info_bad_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"")
    with pytest.raises(ProjectError, match="file is empty"):
        project_info(bad)
