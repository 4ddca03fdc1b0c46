"""`hemalens explain`: JSON contract, caching in the project, invalidation, meta-explanations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hemalens.engine.cli import main
from hemalens.engine.explain.store import read_explanations
from hemalens.engine.models.store import load_model
from hemalens.engine.review.predictions import read_predictions


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain")
    assert main(["synth", "qpi", str(out / "sim"), "--frames", "80", "--seed", "3",
                 "--donors", "1", "--json"]) == 0
    assert main(["segment", "--manifest", str(out / "sim" / "manifest.csv"),
                 "-o", str(out / "P.hemalens"), "--json"]) == 0
    assert main(["train", str(out / "P.hemalens"), "--epochs", "2", "--mc", "5", "--name", "m1",
                 "--json"]) == 0
    assert main(["predict", str(out / "P.hemalens"), "--mc", "5", "--json"]) == 0
    return out / "P.hemalens"


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_explain_stores_maps_and_reuses_the_cache(predicted, tmp_path, capsys):
    project = tmp_path / "P.hemalens"
    shutil.copytree(predicted, project)
    capsys.readouterr()
    assert main(["explain", str(project), "--method", "saliency", "--cells", "0,1,2",
                 "--json"]) == 0
    first = _json(capsys)
    assert set(first) >= {"method", "cells", "seconds", "per_cell_ms"}
    assert first["method"] == "saliency" and first["cells"] == 3 and first["computed"] == 3
    assert first["per_cell_ms"] > 0
    _, meta = load_model(project)
    maps, targets, computed = read_explanations(project, meta["name"], "saliency",
                                                np.arange(3), model_created=str(meta["created"]))
    assert computed.all() and maps.shape[0] == 3 and np.isfinite(maps).all()
    assert np.abs(maps).sum(axis=(1, 2)).min() > 0  # a real map, not zeros
    # predicted class by default: the stored prediction
    predicted_codes = read_predictions(project, meta["name"])[0]["predicted"][:3]
    np.testing.assert_array_equal(targets, predicted_codes)
    assert main(["explain", str(project), "--method", "saliency", "--cells", "0,1,2,3",
                 "--json"]) == 0
    second = _json(capsys)
    assert second["cached"] == 3 and second["computed"] == 1


def test_a_new_model_invalidates_the_cache(predicted, tmp_path, capsys):
    project = tmp_path / "P.hemalens"
    shutil.copytree(predicted, project)
    assert main(["explain", str(project), "--method", "occlusion", "--cells", "4,5",
                 "--json"]) == 0
    capsys.readouterr()
    # a retrained model of the same name replaces the old one
    assert main(["train", str(project), "--epochs", "1", "--mc", "5", "--name", "m1",
                 "--seed", "7", "--json"]) == 0
    capsys.readouterr()
    assert main(["explain", str(project), "--method", "occlusion", "--cells", "4,5",
                 "--json"]) == 0
    assert _json(capsys)["computed"] == 2


def test_gradcam_on_lenet5_is_refused_with_a_reason(predicted, capsys):
    capsys.readouterr()
    assert main(["explain", str(predicted), "--method", "gradcam", "--cells", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "grad-cam" in err.lower()


def test_bad_selection_names_the_file(predicted, capsys):
    capsys.readouterr()
    assert main(["explain", str(predicted), "--method", "saliency", "--cells", "99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert "P.hemalens" in err and "99999" in err


def test_meta_explanations_write_grid_clusters_and_json(predicted, tmp_path, capsys):
    project = tmp_path / "P.hemalens"
    shutil.copytree(predicted, project)
    capsys.readouterr()
    code = main(["explain", str(project), "--meta", "--method", "saliency",
                 "--out", str(tmp_path / "meta"), "--json"])
    result = _json(capsys)
    assert code == 0
    assert len(result["bins"]) > 0 and len(result["clusters"]) == 4
    assert sum(c["size"] for c in result["clusters"]) == result["cells"]
    for cluster in result["clusters"]:
        assert abs(sum(cluster["composition"].values()) - 1) < 1e-6
    for f in result["files"]:
        assert Path(f).stat().st_size > 500
    written = json.loads((tmp_path / "meta" / "meta.json").read_text())
    assert written["clusters"] == result["clusters"]


def test_lime_can_explain_the_mc_dropout_mean(predicted, tmp_path, capsys):
    project = tmp_path / "P.hemalens"
    shutil.copytree(predicted, project)
    _, meta = load_model(project)
    stamp = str(meta["created"])
    capsys.readouterr()
    assert main(["explain", str(project), "--method", "lime", "--cells", "6", "--json"]) == 0
    freq, _, _ = read_explanations(project, meta["name"], "lime", [6], model_created=stamp)
    assert main(["explain", str(project), "--method", "lime", "--cells", "6", "--mc", "20",
                 "--json"]) == 0
    assert _json(capsys)["computed"] == 1  # another kind of map: not taken from the cache
    mc, _, done = read_explanations(project, meta["name"], "lime", [6], model_created=stamp,
                                    settings={"seed": 0, "mc_passes": 20})
    assert done.all() and np.isfinite(mc).all()
    assert not np.allclose(mc, freq)  # dropout noise changes the surrogate's targets
    # same segments, same masks: the maps agree in where the evidence lies
    assert np.corrcoef(mc.ravel(), freq.ravel())[0, 1] > 0.5
    assert main(["explain", str(project), "--method", "saliency", "--mc", "5"]) == 2
    assert "LIME only" in capsys.readouterr().err


def test_any_class_on_request_and_png_export(predicted, tmp_path, capsys):
    project = tmp_path / "P.hemalens"
    shutil.copytree(predicted, project)
    _, meta = load_model(project)
    other = meta["class_names"][1]
    capsys.readouterr()
    assert main(["explain", str(project), "--method", "saliency", "--cells", "0,1",
                 "--target", other, "--png", str(tmp_path / "png"), "--json"]) == 0
    result = _json(capsys)
    assert result["target"] == other and len(result["files"]) == 2
    _, targets, done = read_explanations(project, meta["name"], "saliency", [0, 1],
                                         model_created=str(meta["created"]),
                                         settings={"seed": 0, "target": other})
    assert done.all() and (targets == 1).all()
    for f in result["files"]:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", str(project), "--method", "saliency", "--target", "platelet"]) == 2
    assert "platelet" in capsys.readouterr().err


def test_chunk_sizes_follow_the_time_between_saves():
    from hemalens.engine.workflows.explain import chunk_sizes

    assert chunk_sizes(1000, 0.1, 128) == [128] * 7 + [104]  # fast: capped by count
    assert chunk_sizes(100, 1.0, 128, every_s=30) == [30, 30, 30, 10]  # slow: by time
    assert chunk_sizes(10, 100.0, 128) == [4, 4, 2]  # very slow: the floor
    assert chunk_sizes(0, 0.1, 128) == []
    assert sum(chunk_sizes(12345, 0.037, 128)) == 12345


def test_a_slow_explanation_is_saved_at_least_every_few_seconds(predicted, tmp_path,
                                                                monkeypatch):
    """Saves follow the measured cost, so a kill loses at most SAVE_EVERY_S of work."""
    from hemalens.engine.workflows import explain as ex

    path = tmp_path / "P.hemalens"
    shutil.copytree(predicted, path)
    saved: list[int] = []
    real_write = ex.write_explanations

    def recording(project, name, method, ids, *args, **kwargs):
        saved.append(len(ids))
        return real_write(project, name, method, ids, *args, **kwargs)

    monkeypatch.setattr(ex, "write_explanations", recording)
    cells = ex.select_cells(path, "all")[:60]
    # the measured cost per cell is what the sizes follow: pretend every cell took 1 s
    real_chunk = ex.explain_chunk

    def slow(*args, **kwargs):
        maps, targets, _ = real_chunk(*args, **kwargs)
        return maps, targets, float(len(args[4]))

    monkeypatch.setattr(ex, "explain_chunk", slow)
    monkeypatch.setattr(ex, "SAVE_EVERY_S", 10.0)
    out = ex.explain_project(path, "occlusion", cells=[int(c) for c in cells])
    assert out["computed"] == 60
    assert saved[0] == ex.PROBE and max(saved[1:]) == 10 and sum(saved) == 60
    maps, targets = read_explanations(path, "m1", "occlusion", cells)[:2]
    assert np.isfinite(maps).all() and (targets >= 0).all()  # every cell saved
