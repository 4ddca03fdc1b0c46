"""Damaged projects meet every command with one line naming the file, never a traceback.

A small trained, predicted and explained project is copied and damaged in one way per
case (what the hardening probe found: wrong types and shapes, out-of-range codes, deep or
huge JSON, corrupt bytes, absurd model sizes, missing columns, foreign databases). Each
command then must exit 0 (the damage does not concern it), or 1/2 with exactly one line
on stderr that names a file of the project. ``make test`` runs every damage against the
fast commands; the slow run adds train, predict, review and explain.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from hemalens.engine.cli import main

DAMAGES: dict[str, Callable[[Path], None]] = {}


def damage(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    DAMAGES[fn.__name__] = fn
    return fn


def _cells(p: Path) -> h5py.File:
    return h5py.File(p / "cells.h5", "r+")


@damage
def cells_group_is_a_dataset(p):
    with _cells(p) as f:
        del f["cells"]
        f["cells"] = np.arange(5)


@damage
def class_names_are_integers(p):
    with _cells(p) as f:
        del f["labels/classes"]
        f["labels/classes"] = np.arange(4)


@damage
def class_list_is_empty(p):
    with _cells(p) as f:
        del f["labels/classes"]
        f.create_dataset("labels/classes", shape=(0,), dtype=h5py.string_dtype())


@damage
def label_codes_out_of_range(p):
    with _cells(p) as f:
        col = f["cells/original_label"]
        col[0] = 99


@damage
def input_ids_out_of_range(p):
    with _cells(p) as f:
        f["cells/input_id"][0] = 99


@damage
def strings_where_numbers_belong(p):
    with _cells(p) as f:
        n = f["cells/diameter_um"].shape[0]
        del f["cells/diameter_um"]
        f["cells/diameter_um"] = np.array([b"big"] * n)


@damage
def settings_json_nested_100k_deep(p):
    with _cells(p) as f:
        f["meta"].attrs["settings_json"] = "[" * 100_000 + "]" * 100_000


@damage
def settings_json_broken(p):
    with _cells(p) as f:
        f["meta"].attrs["settings_json"] = "{oops"


@damage
def patches_fewer_than_cells(p):
    with _cells(p) as f:
        img = f["patches/images"]
        img.resize((img.shape[0] - 3, *img.shape[1:]))


@damage
def patch_kind_unknown(p):
    with _cells(p) as f:
        f["meta"].attrs["patch_kind"] = "x-ray"


@damage
def corrupt_bytes_in_the_patches(p):
    path = p / "cells.h5"
    with h5py.File(path, "r") as f:
        offset = f["patches/images"].id.get_chunk_info(3).byte_offset
    data = bytearray(path.read_bytes())
    data[offset: offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@damage
def corrupt_metadata_bytes(p):
    path = p / "cells.h5"
    data = bytearray(path.read_bytes())
    data[600:900] = b"\x00" * 300
    path.write_bytes(bytes(data))


def _model_file(p: Path) -> Path:
    return next((p / "derived" / "models").glob("*.h5"))


@damage
def model_spec_absurd_sizes(p):
    with h5py.File(_model_file(p), "r+") as f:
        spec = json.loads(f.attrs["spec_json"])
        spec["input_size"] = 10**7
        f.attrs["spec_json"] = json.dumps(spec)


@damage
def model_weights_absurd_shape(p):
    with h5py.File(_model_file(p), "r+") as f:
        name = next(iter(f["weights"]))
        del f["weights"][name]
        f["weights"].create_dataset(name, shape=(10**6, 10**6), dtype="f4", chunks=(1, 1024))


@damage
def model_spec_not_json(p):
    with h5py.File(_model_file(p), "r+") as f:
        f.attrs["spec_json"] = "]]"


@damage
def model_class_names_disagree_with_outputs(p):
    with h5py.File(_model_file(p), "r+") as f:
        f.attrs["class_names_json"] = json.dumps(["a", "b"])


@damage
def model_classes_unknown_to_the_project(p):
    with h5py.File(_model_file(p), "r+") as f:
        n = len(json.loads(f.attrs["class_names_json"]))
        f.attrs["class_names_json"] = json.dumps([f"alien{i}" for i in range(n)])


def _predictions(p: Path) -> Path:
    return next((p / "derived" / "predictions").glob("*.h5"))


@damage
def predictions_without_predicted_column(p):
    with h5py.File(_predictions(p), "r+") as f:
        del f["predicted"]


@damage
def predictions_attrs_json_deep(p):
    with h5py.File(_predictions(p), "r+") as f:
        f.attrs["attrs_json"] = "{" + '"a":{' * 50_000 + "}" * 50_001


@damage
def predictions_codes_out_of_range(p):
    with h5py.File(_predictions(p), "r+") as f:
        f["predicted"][:5] = 77


@damage
def explanation_segment_is_garbage(p):
    for seg in (p / "derived" / "explanations").rglob("seg-*.h5"):
        seg.write_bytes(b"not hdf5" * 100)


@damage
def annotations_are_garbage(p):
    (p / "annotations.sqlite").write_bytes(b"garbage" * 1000)


@damage
def annotations_missing(p):
    (p / "annotations.sqlite").unlink()


@damage
def annotations_labels_out_of_range(p):
    conn = sqlite3.connect(p / "annotations.sqlite")
    conn.execute("INSERT INTO labels VALUES (0, 999)")
    conn.commit()
    conn.close()


@damage
def marker_is_garbage(p):
    (p / "hemalens-project.json").write_text("\x00\x01 not json")


FAST = {
    "info": lambda p: ["info", str(p), "--json"],
    "export": lambda p: ["export", str(p), str(p.parent / "out.csv")],
    "history": lambda p: ["history", str(p), "--json"],
    "label": lambda p: ["label", str(p), "--cells", "0,1", "--set", "monocyte"],
}
SLOW = {
    "train": lambda p: ["train", str(p), "--epochs", "1", "--mc", "2", "--name", "t2"],
    "predict": lambda p: ["predict", str(p), "--mc", "2"],
    "review": lambda p: ["review", str(p), "--no-ood", "--mc", "2"],
    "explain": lambda p: ["explain", str(p), "--method", "saliency", "--cells", "0,1,2",
                          "--force"],
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("damaged")
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        assert main(["synth", "qpi", str(d / "sim"), "--frames", "30", "--seed", "3",
                     "--donors", "1", "--json"]) == 0
        assert main(["segment", "--manifest", str(d / "sim" / "manifest.csv"), "--modality",
                     "phase", "-o", str(d / "P.hemalens"), "--json"]) == 0
        assert main(["train", str(d / "P.hemalens"), "--epochs", "1", "--mc", "2",
                     "--json"]) == 0
        assert main(["predict", str(d / "P.hemalens"), "--mc", "2", "--json"]) == 0
        assert main(["explain", str(d / "P.hemalens"), "--method", "saliency", "--cells",
                     "0,1,2,3", "--json"]) == 0
    return d / "P.hemalens"


def _run(args: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _check(base: Path, tmp_path: Path, name: str, command: str, argv) -> None:
    project = tmp_path / "P.hemalens"
    shutil.copytree(base, project)
    DAMAGES[name](project)
    code, err = _run(argv(project))
    assert code in (0, 1, 2), (name, command, code, err)
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (name, command, err[-3000:])
        assert str(project) in lines[0], (name, command, lines[0])


@pytest.mark.parametrize("name", sorted(DAMAGES))
@pytest.mark.parametrize("command", sorted(FAST))
def test_fast_commands_on_damaged_projects(base, tmp_path, name, command):
    _check(base, tmp_path, name, command, FAST[command])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DAMAGES))
@pytest.mark.parametrize("command", sorted(SLOW))
def test_slow_commands_on_damaged_projects(base, tmp_path, name, command):
    _check(base, tmp_path, name, command, SLOW[command])
