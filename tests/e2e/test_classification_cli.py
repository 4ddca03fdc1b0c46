"""`train`/`predict`/`evaluate`/`review` contracts: JSON shapes, plots, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hemalens.engine.cli import main


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    assert main(["synth", "qpi", str(out / "sim"), "--frames", "120", "--seed", "2",
                 "--donors", "1", "--json"]) == 0
    assert main(["segment", "--manifest", str(out / "sim" / "manifest.csv"),
                 "-o", str(out / "P.hemalens"), "--json"]) == 0
    return out


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_evaluate_prints_both_tables_and_writes_reliability_plots(small, tmp_path, capsys):
    capsys.readouterr()
    code = main(["evaluate", str(small / "P.hemalens"), "--arch", "lenet5", "--runs", "2",
                 "--epochs", "3", "--mc", "10", "--out", str(tmp_path / "plots"), "--json"])
    result = _json(capsys)
    assert code == 0 and result["runs"] == 2
    modes = {(r["inference"], r["metric"]) for r in result["table1"]}
    assert modes == {(m, k) for m in ("freq", "mc_mean", "mc_median")
                     for k in ("precision", "recall", "f1", "accuracy")}
    assert all(r["model"] == "lenet5" and r["dropout"] == 0.25 for r in result["table1"])
    measures = {(r["measure"], r["metric"]) for r in result["table2"]}
    assert measures == {(m, k) for m in ("freq", "mc_mean", "mc_median", "mc_std")
                        for k in ("ece", "mce")}
    for row in result["table2"]:
        assert 0 <= row["uncalibrated"]["mean"] <= 1 and 0 <= row["calibrated"]["mean"] <= 1
    assert result["figures"] and all(Path(f).stat().st_size > 1000 for f in result["figures"])


def test_predict_and_review_need_a_model_and_predictions(small, tmp_path, capsys):
    project = small / "P.hemalens"
    import shutil

    copy = tmp_path / "copy.hemalens"
    shutil.copytree(project, copy)
    assert main(["predict", str(copy)]) == 2
    assert "copy.hemalens" in capsys.readouterr().err
    assert main(["review", str(copy), "--no-ood"]) == 2
    err = capsys.readouterr().err
    assert "copy.hemalens" in err and "\n" not in err.strip()


def test_training_refuses_projects_without_usable_labels(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["synth", "qpi", str(sim), "--frames", "20", "--seed", "1", "--donors", "1",
                 "--json"]) == 0
    capsys.readouterr()
    first = sorted(sim.glob("run*_phase.tif"))[0]
    unlabelled = tmp_path / "unlabelled.h5"
    assert main(["segment", str(first), "-o", str(unlabelled), "--json"]) == 0
    assert main(["train", str(unlabelled), "--epochs", "1"]) == 2
    assert "label" in capsys.readouterr().err.lower()
    one_class = tmp_path / "one_class.h5"
    assert main(["segment", str(first), "--label", "lymphocyte", "-o", str(one_class),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["train", str(one_class), "--epochs", "1"]) == 2
    assert "class" in capsys.readouterr().err.lower()
