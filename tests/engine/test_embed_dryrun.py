"""Dry-run analysis: acceptance on a TML-like digits embedding, reports, npz input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.svm import SVC

from hemalens.engine.embed.dryrun import (
    GRIDS,
    PAPER_COMBOS,
    _FoldScorer,
    dry_run,
    load_embeddings_npz,
    plot_dry_run,
    table_i,
)
from hemalens.engine.embed.folds import region_folds
from hemalens.engine.errors import InputError
from hemalens.engine.jobs import CallbackProgress, Cancelled


@pytest.fixture(scope="module")
def digits():
    """A TML-like 32-d embedding of digits: 8 whitened PCA components plus noise dimensions,
    randomly rotated and L2-normalised (SVM macro-F1 ~0.94); regions = random blocks of 20."""
    Xd, y = load_digits(return_X_y=True)
    Z = PCA(8, whiten=True, random_state=0).fit_transform(Xd)
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    X = np.hstack([Z, 0.3 * rng.normal(size=(len(y), 24))]) @ Q
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    groups = rng.permutation(np.arange(len(y)) // 20)
    return X, y, groups


ONE = {
    "lambda_c": (0.5,),
    "lambda_r": (0.32,),
    "lambda_s": (1.0,),
    "criteria": (("mean-std*mean-all", False),),
    "neighbours_second": (),
    "svm": {"C": (10.0,), "gamma_factor": (1.0,)},
}


def test_contraction_reaches_099_within_15_iterations_and_without_is_lower(digits):
    X, y, groups = digits
    combos = [("c",), ("c", "s"), ("s",), ("r",)]
    res = dry_run(X, y, groups, combos, grid=ONE, iterations=15, folds=4, stop_at_perfect=False)
    base = res["settings"]["baseline_f1"]
    assert 0.85 < base < 0.97  # a realistic, imperfect starting embedding
    best = {",".join(b["types"]): b for b in res["best"]}
    for key in ("c", "c,s"):
        assert best[key]["max_f1"] >= 0.99 and best[key]["iterations_to_max"] <= 15
        assert max(res["curves"][key][0]["f1"][:16]) >= 0.99
    worst_with = min(best[k]["max_f1"] for k in ("c", "c,s"))
    for key in ("s", "r"):
        assert best[key]["max_f1"] < worst_with - 0.005
        assert best[key]["max_f1"] > base  # they still help a little
    json.dumps(res)  # JSON-ready


@pytest.mark.slow
def test_paper_combos_small_grid(digits, tmp_path):
    X, y, groups = digits
    res = dry_run(X, y, groups, PAPER_COMBOS, grid="small", iterations=30)
    for b in res["best"]:
        assert b["max_f1"] >= 0.99
    paths = plot_dry_run(res, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_selection_reports_and_plots(digits, tmp_path):
    X, y, groups = digits
    grid = {
        **ONE,
        "lambda_c": (0.0625, 0.5),
        "criteria": (("mean-std*mean-all", False), ("nearest", True)),
        "neighbours_second": (1, 2),
    }
    events = []
    prog = CallbackProgress(on_progress=lambda d, t: events.append((d, t)))
    res = dry_run(X[::2], y[::2], groups[::2], [("c",), ("c", "s")], grid=grid, iterations=6,
                  folds=3, progress=prog)  # fmt: skip
    assert events[-1][0] == events[-1][1]
    # every first-pass setting is recorded, and the winner is the best under the chosen Ω
    assert len(res["curves"]["c"]) == 4
    crit = (res["criterion"]["criterion"], res["criterion"]["probabilistic"])
    for b in res["best"]:
        recs = [r for r in res["curves"][",".join(b["types"])]
                if (r["params"]["criterion"], r["params"]["probabilistic"]) == crit]  # fmt: skip
        assert b["max_f1"] == pytest.approx(max(r["max_f1"] for r in recs))
        for r in recs:
            assert r["iterations_to_max"] == int(np.argmax(r["f1"]))
            assert len(r["f1"]) <= 7
    cs = res["best"][1]
    assert set(cs["neighbours_scores"]) == {"1", "2", "9"}  # second pass; 15 -> K-1 = 9
    assert "neighbours_scores" in res["best"][0] and len(res["best"][0]["neighbours_scores"]) == 1
    md = table_i(res)
    rows = [line for line in md.splitlines() if line.startswith("| c")]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "-"  # λ_r not used by "c"
    paths = plot_dry_run(res, tmp_path / "plots")
    assert [p.name for p in paths] == ["dry_run_curves.png", "dry_run_neighbours.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_cached_kernel_scorer_equals_rbf_svc(digits):
    X, y, groups = digits
    X, y, groups = X[:600], y[:600], groups[:600]
    folds = region_folds(y, groups, 3)
    params = [{"C": 10.0, "gamma": 1.3}] * 3
    cached = _FoldScorer(X, y, folds, params)
    direct = _FoldScorer(X, y, folds, params, max_cache_points=0)
    assert cached.cache and not direct.cache
    np.testing.assert_allclose(cached.scores(), direct.scores(), atol=1e-9)
    X2 = X.copy()
    rows = np.flatnonzero(y == 3)
    X2[rows] *= 0.5
    cached.update(X2, rows)
    direct.update(X2, rows)
    np.testing.assert_allclose(cached.scores(), direct.scores(), atol=1e-9)
    f = folds[0]
    m = SVC(C=10.0, gamma=1.3).fit(X2[f.train], y[f.train])
    from hemalens.engine.embed.svm import macro_f1

    assert direct.scores()[0] == pytest.approx(macro_f1(y[f.val], m.predict(X2[f.val])))


def test_folds_scored_in_threads_give_the_same_scores(digits):
    X, y, groups = digits
    folds = region_folds(y[:600], groups[:600], 3)
    params = [{"C": 10.0, "gamma": 1.3}] * 3
    serial = _FoldScorer(X[:600], y[:600], folds, params, n_jobs=1)
    threads = _FoldScorer(X[:600], y[:600], folds, params, n_jobs=3)
    np.testing.assert_array_equal(serial.scores(), threads.scores())


def test_dry_run_cancels_and_rejects_bad_input(digits):
    X, y, groups = digits
    prog = CallbackProgress()
    prog.cancel()
    with pytest.raises(Cancelled):
        dry_run(X, y, groups, [("c",)], grid=ONE, iterations=3, progress=prog)
    with pytest.raises(ValueError, match="unknown grid"):
        dry_run(X, y, groups, [("c",)], grid="huge")
    with pytest.raises(ValueError, match="types"):
        dry_run(X, y, groups, [("x",)], grid=ONE)
    with pytest.raises(ValueError, match="groups"):
        dry_run(X, y, groups[:-1], [("c",)], grid=ONE)


def test_grids_follow_the_paper():
    p = GRIDS["paper"]
    assert p["lambda_c"] == (1 / 16, 1 / 8, 1 / 4, 1 / 2)
    np.testing.assert_allclose(p["lambda_r"], [0.02, 0.04, 0.08, 0.16, 0.32])
    assert p["lambda_s"] == (0.25, 0.5, 1, 2, 4, 8)
    assert p["gamma"] == (0, 0.25, 0.5, 0.75, 1)
    assert len(p["criteria"]) == 8 and p["neighbours"] == (15,)
    assert p["neighbours_second"] == tuple(range(1, 16))


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_embeddings_npz(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4))
    y = np.repeat([0, 1, 2], 4)
    g = np.arange(12) // 3
    got = load_embeddings_npz(_save(tmp_path / "ok.npz", embeddings=X, labels=y, groups=g))
    np.testing.assert_array_equal(got[0], X)
    assert got[1].dtype == np.int64
    alt = load_embeddings_npz(_save(tmp_path / "alt.npz", X=X, y=y.astype(float), regions=g))
    np.testing.assert_array_equal(alt[1], y)
    Xnan = X.copy()
    Xnan[0, 0] = np.nan
    y1 = y.copy()
    y1[0] = 5
    bad = {
        "nokey.npz": ({"embeddings": X, "labels": y}, "missing key 'groups'"),
        "nan.npz": ({"embeddings": Xnan, "labels": y, "groups": g}, "NaN"),
        "shape.npz": ({"embeddings": X, "labels": y[:-1], "groups": g}, "shape"),
        "flat.npz": ({"embeddings": X[:, 0], "labels": y, "groups": g}, "(N, d)"),
        "one.npz": ({"embeddings": X, "labels": 0 * y, "groups": g}, "two classes"),
        "single.npz": ({"embeddings": X, "labels": y1, "groups": g}, "single sample"),
        "float.npz": ({"embeddings": X, "labels": y + 0.5, "groups": g}, "integer"),
    }
    for name, (arrays, msg) in bad.items():
        path = _save(tmp_path / name, **arrays)
        with pytest.raises(InputError) as err:
            load_embeddings_npz(path)
        text = str(err.value)
        assert text.startswith(f"{path}: ") and msg in text and "\n" not in text
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz: not a readable npz"):
        load_embeddings_npz(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="file not found"):
        load_embeddings_npz(tmp_path / "absent.npz")


def test_cached_search_picks_the_same_svm_parameters_as_fit_svm(digits):
    from hemalens.engine.embed.svm import fit_svm

    X, y, groups = digits
    X, y, groups = X[::3], y[::3], groups[::3]
    folds = region_folds(y, groups, 3)
    grid = {"C": (0.3, 3.0, 30.0), "gamma_factor": (0.3, 1.0)}
    got = _FoldScorer(X, y, folds).select(grid, seed=2)
    for f, p in zip(folds, got, strict=True):
        ref = fit_svm(X[f.train], y[f.train], grid=grid, seed=2).params
        assert p["C"] == ref["C"] and p["gamma"] == pytest.approx(ref["gamma"])


def test_rescaled_cache_matches_recomputed_distances(digits):
    from hemalens.engine.embed.interventions import InterventionParams, iter_interventions

    X, y, groups = digits
    X, y = X[:300], y[:300]
    folds = region_folds(y, groups[:300], 3)
    scorer = _FoldScorer(X, y, folds, [{"C": 1.0, "gamma": 1.0}] * 3)
    params = InterventionParams(types=("c", "s"), lambda_s=4.0, neighbours=3)
    for st in iter_interventions(X, y, params, 5):
        emb = st.embedding()
        assert st.scale != 1.0
        scorer.rescale(st.scale)
        scorer.update(emb, np.flatnonzero(y == st.chosen))
    from sklearn.metrics.pairwise import euclidean_distances

    np.testing.assert_allclose(scorer.D, euclidean_distances(emb, emb, squared=True), atol=1e-5)
