"""The OOD detector: p-values, fit/threshold, storage, and the train -> predict -> export path."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hemalens.engine.cli import main
from hemalens.engine.models.store import load_model
from hemalens.engine.project import Project, export_cells_csv
from hemalens.engine.review import read_predictions
from hemalens.engine.review.ood_detector import OODDetector, fit_ood_detector, tail_pvalue


def _gaussian_data(rng, n, d=6, k=3, shift=0.0):
    y = rng.integers(0, k, n)
    means = np.eye(k, d) * 4.0
    x = means[y] + rng.normal(size=(n, d)) + shift
    return x, y


def test_tail_pvalue_is_empirical_inside_and_keeps_order_beyond():
    ref = np.arange(1, 101, dtype=float)  # 1 .. 100
    p = tail_pvalue(ref, np.array([0.0, 50.0, 100.0]))
    # (#{ref >= s} + 1) / (n + 1) inside the range; at the top the tail may only lower it
    assert p[:2].tolist() == pytest.approx([1.0, 52 / 101]) and 0 < p[2] <= 2 / 101
    far = tail_pvalue(ref, np.array([150.0, 200.0, 1e4]))
    assert far[0] > far[1] > far[2] > 0  # no tie at 1/(n+1) beyond the reference
    assert far[0] <= 1 / 101 + 1e-12


def test_detector_separates_shifted_data_and_keeps_95_percent_of_validation():
    rng = np.random.default_rng(0)
    xt, yt = _gaussian_data(rng, 600)
    xv, _ = _gaussian_data(rng, 400)
    conf_v = rng.uniform(0.6, 1.0, len(xv))
    det = fit_ood_detector(xt, xt, yt, xv, xv, conf_v, k=5)
    assert np.mean(~det.flag(det.combine(det.val_parts))) == pytest.approx(0.95, abs=0.01)
    xi, _ = _gaussian_data(rng, 300)
    xo, _ = _gaussian_data(rng, 300, shift=6.0)  # far from every class
    s_in = det.score(xi, xi, rng.uniform(0.6, 1.0, 300))
    s_out = det.score(xo, xo, rng.uniform(0.6, 1.0, 300))
    assert np.median(s_out) > det.threshold > np.median(s_in)
    assert det.flag(s_out).mean() > 0.9 and det.flag(s_in).mean() < 0.15
    # low confidence alone raises the score (the probability part)
    low = det.score(xi, xi, np.full(300, 0.3))
    assert np.median(low) > np.median(s_in)


def test_detector_round_trips_through_model_arrays():
    rng = np.random.default_rng(1)
    xt, yt = _gaussian_data(rng, 200, d=8)
    tt = rng.normal(size=(200, 1500)).astype(np.float32)  # wide trunk: PCA before k-NN
    xv, _ = _gaussian_data(rng, 80, d=8)
    tv = rng.normal(size=(80, 1500)).astype(np.float32)
    wide = np.c_[xt, rng.normal(size=(200, 1100))]  # wide penultimate: PCA first
    wide_v = np.c_[xv, rng.normal(size=(80, 1100))]
    det = fit_ood_detector(wide, tt, yt, wide_v, tv, rng.uniform(size=80), max_bank=50)
    assert det.bank.shape[0] == 50 and det.pca_components.shape[1] == 1500
    assert det.maha_components.shape[1] == 1108 and det.precision.shape[0] < 1108
    xv, xt = wide_v, wide
    arrays, settings = det.to_model()
    again = OODDetector.from_model({"arrays": arrays, "extra": {"ood": json.loads(
        json.dumps(settings))}})
    assert again is not None
    conf = rng.uniform(size=80)
    np.testing.assert_allclose(again.score(xv, tv, conf), det.score(xv, tv, conf), rtol=1e-6)
    assert OODDetector.from_model({"arrays": {}, "extra": {}}) is None


def test_fit_rejects_bad_input():
    rng = np.random.default_rng(2)
    x, y = _gaussian_data(rng, 50)
    with pytest.raises(ValueError, match="keep"):
        fit_ood_detector(x, x, y, x, x, np.ones(50), keep=1.0)
    with pytest.raises(ValueError, match="every class"):
        fit_ood_detector(x, x, np.where(y == 1, 2, y), x, x, np.ones(50))


def _run(argv, capsys) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_predict_export_review_carry_the_ood_score(tmp_path, capsys):
    sim, project = tmp_path / "sim", tmp_path / "P.hemalens"
    assert main(["synth", "qpi", str(sim), "--frames", "60", "--seed", "2", "--donors", "1",
                 "--json"]) == 0
    assert main(["segment", "--manifest", str(sim / "manifest.csv"), "-o", str(project),
                 "--json"]) == 0
    trained = _run(["train", str(project), "--arch", "lenet5", "--epochs", "2", "--mc", "8",
                    "--seed", "0"], capsys)
    assert trained["ood"]["keep"] == 0.95 and trained["ood"]["measure"] == "mc_mean_ts"
    model, meta = load_model(project)
    det = OODDetector.from_model(meta)
    assert det is not None and det.threshold == pytest.approx(trained["ood"]["threshold"])
    # the threshold keeps 95 % of the validation cells it was set on
    val_scores = det.combine(det.val_parts)
    assert np.mean(val_scores <= det.threshold) == pytest.approx(0.95, abs=0.02)
    assert len(val_scores) == trained["split"]["val"]

    predicted = _run(["predict", str(project), "--mc", "8"], capsys)
    cols, attrs = read_predictions(project)
    assert cols["ood"].dtype == bool and cols["ood_score"].dtype == np.float32
    np.testing.assert_array_equal(cols["ood"], cols["ood_score"] > det.threshold)
    assert predicted["ood"] == int(cols["ood"].sum())
    assert attrs["ood_threshold"] == pytest.approx(det.threshold)

    n = export_cells_csv(project, tmp_path / "cells.csv")
    with open(tmp_path / "cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert n == len(rows) and {"ood_score", "ood"} <= set(rows[0])
    assert sum(r["ood"] == "true" for r in rows) == int(cols["ood"].sum())

    # the review session (gallery badge, filter, differential) reads the model's flag
    from hemalens.engine.review.session import ReviewSession

    with ReviewSession.open(project, user="tech") as session:
        np.testing.assert_array_equal(session.ood, cols["ood"] & session.qc)

    review = _run(["review", str(project), "--mc", "8", "--ood-n", "20"], capsys)
    with Project.open(project) as p:
        qc = np.asarray(p.cells["qc_pass"], bool)
    excluded = sum(row["_excluded"]["ood"] for row in review["differential"].values())
    assert excluded == int((cols["ood"] & qc).sum())  # the model's flag, counted apart
    ood = review["ood"]
    assert "ood_score" in ood and "ood_score" in ood["candidates"]
    assert set(ood["ood_score"]["auroc"]) == {"erythrocyte", "defocused", "digits", "noise"}
    assert "other half" in ood["selection"]
    assert ood["best_measure"] in ood["candidates"]
