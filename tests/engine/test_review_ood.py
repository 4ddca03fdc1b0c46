"""Out-of-distribution sets (look like real patches) and the confidence statistics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import stats

from hemalens.engine.review.ood import OOD_SETS, ood_sets, ood_statistics, render_phase_patch
from hemalens.engine.segment.normalise import normalise_phase
from hemalens.engine.segment.settings import SegmentSettings
from hemalens.engine.synth.cells import LEUKOCYTES, draw_defocused, draw_leukocyte


@pytest.fixture(scope="module")
def sets():
    return ood_sets(40, seed=3)


def test_shapes_types_ranges(sets):
    assert tuple(sets) == OOD_SETS
    for name, x in sets.items():
        assert x.shape == (40, 50, 50) and x.dtype == np.float32, name
        assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0, name
    small = ood_sets(3, patch_size=32, seed=0)
    assert all(v.shape == (3, 32, 32) for v in small.values())
    assert all(v.shape == (0, 50, 50) for v in ood_sets(0).values())


def test_deterministic_for_a_seed_and_sets_independent(sets):
    again = ood_sets(40, seed=3)
    for name in OOD_SETS:
        np.testing.assert_array_equal(sets[name], again[name])
    other = ood_sets(40, seed=4)
    assert not any(np.array_equal(sets[k], other[k]) for k in OOD_SETS)
    # each set has its own stream: fewer patches give the same first patches
    fewer = ood_sets(5, seed=3)
    for name in ("erythrocyte", "defocused", "noise"):
        np.testing.assert_array_equal(fewer[name], sets[name][:5])


def test_phase_sets_are_normalised_like_real_patches(sets):
    # the clip normalisation maps 0.2..4 rad to 0..1: background (0 rad + noise) is 0
    border = np.concatenate([sets["erythrocyte"][:, :3].ravel(), sets["defocused"][:, :3].ravel()])
    assert np.mean(border == 0.0) > 0.99
    # erythrocytes are low-phase (< 0.8 rad -> < 0.16 after normalisation)
    assert sets["erythrocyte"].max() <= (0.8 + 0.25 - 0.2) / 3.8
    # with a field of view of exactly 51 canvas pixels the render is the centred crop of
    # the (zero-padded) canvas, normalised by normalise_phase
    canvas = draw_leukocyte("monocyte", np.random.default_rng(0), 0.3).phase
    settings = SegmentSettings(patch_fov_um=51 * 0.3)
    patch = render_phase_patch(canvas, 0.3, 51, settings)
    padded = np.pad(canvas, 40)
    c = padded.shape[0] // 2  # canvases are (2 half + 1) square, the object at the middle
    crop = padded[c - 25 : c + 26, c - 25 : c + 26]
    np.testing.assert_allclose(patch, normalise_phase(crop, settings), atol=1e-5)
    assert patch.max() > 0.2  # the cell is there


def test_erythrocytes_have_a_central_dip(sets):
    x = sets["erythrocyte"]
    yy, xx = np.mgrid[:50, :50]
    r = np.hypot(yy - 24.5, xx - 24.5) * 0.3  # um
    centre = x[:, r < 0.8].mean(axis=1)
    rim = x[:, (r > 2.0) & (r < 3.0)].mean(axis=1)
    visible = x.max(axis=(1, 2)) > 0.02  # cells whose rim clears the 0.2 rad clip
    assert visible.sum() >= 20
    assert np.all(centre[visible] < rim[visible])
    assert np.median(centre[visible] / rim[visible]) < 0.6


def _detail(p):
    """Fine-structure contrast: std of the patch minus its 1.5 px Gaussian blur."""
    return float((p - cv2.GaussianBlur(p, (0, 0), 1.5)).std())


def test_defocused_cells_have_lower_contrast_than_in_focus(sets):
    rng = np.random.default_rng(5)
    pairs = []
    for i in range(12):
        dz = (4.0 + i) * (-1) ** i
        blurred, sharp = draw_defocused(LEUKOCYTES[i % 4], dz, rng, 0.3, 528.0)
        pairs.append((_detail(render_phase_patch(blurred.phase, 0.3, 50)),
                      _detail(render_phase_patch(sharp.phase, 0.3, 50))))
    d = np.array(pairs)
    assert np.all(d[:, 0] < d[:, 1])
    # and the set as a whole against in-focus leukocytes through the same pipeline
    focus = [_detail(render_phase_patch(draw_leukocyte(LEUKOCYTES[i % 4], rng, 0.3).phase,
                                        0.3, 50)) for i in range(40)]
    defoc = [_detail(p) for p in sets["defocused"]]
    assert np.median(defoc) < 0.85 * np.median(focus)
    # they are still cells: a centred blob well above the background
    assert np.all(sets["defocused"][:, 20:30, 20:30].mean(axis=(1, 2)) > 0.1)


def test_digits_and_noise(sets):
    from sklearn.datasets import load_digits

    d = sets["digits"]
    assert d.max() == pytest.approx(1.0) and (d == 0).mean() > 0.2  # strokes on black
    # every patch is an upsampled digit: downsampling back recovers an 8x8 digit image
    ref = load_digits().images / 16.0
    small = np.array([cv2.resize(p, (8, 8), interpolation=cv2.INTER_AREA) for p in d[:5]])
    dist = ((small[:, None] - ref[None]) ** 2).sum(axis=(2, 3)).min(axis=1)
    assert np.all(dist < 1.0)
    u = sets["noise"].ravel()
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        ood_sets(-1)
    with pytest.raises(ValueError, match="patch_size"):
        ood_sets(1, patch_size=1)
    with pytest.raises(ValueError, match="pixel_size_um"):
        ood_sets(1, pixel_size_um=0)


# ---- statistics -------------------------------------------------------------------------


def test_statistics_identical_vs_disjoint():
    rng = np.random.default_rng(0)
    conf = {
        "leukocyte": rng.beta(8, 2, 400),
        "same": rng.beta(8, 2, 300),  # identical distribution
        "low": rng.uniform(0.0, 0.4, 200),
        "noise": rng.uniform(0.0, 0.2, 200),
    }
    conf["leukocyte"] = np.clip(conf["leukocyte"], 0.45, 1.0)  # disjoint from low and noise
    conf["same"] = np.clip(conf["same"], 0.45, 1.0)
    r = ood_statistics(conf)
    assert r["reference"] == "leukocyte"
    assert r["auroc"]["same"] == pytest.approx(0.5, abs=0.07)
    assert r["auroc"]["low"] == 1.0 and r["auroc"]["noise"] == 1.0
    assert list(r["auroc"]) == ["same", "low", "noise"]
    # Kruskal-Wallis over all four sets, as scipy computes it
    h = stats.kruskal(*conf.values())
    assert r["kruskal"]["H"] == pytest.approx(h.statistic) and r["kruskal"]["p"] < 1e-10
    pairs = [(p["a"], p["b"]) for p in r["posthoc"]]
    assert pairs == [("leukocyte", "same"), ("leukocyte", "low"), ("leukocyte", "noise"),
                     ("same", "low"), ("same", "noise"), ("low", "noise")]
    assert r["n_comparisons"] == 6
    for p in r["posthoc"]:
        u = stats.mannwhitneyu(conf[p["a"]], conf[p["b"]], alternative="two-sided")
        assert p["U"] == pytest.approx(u.statistic) and p["p"] == pytest.approx(u.pvalue)
        assert p["p_bonferroni"] == pytest.approx(min(1.0, 6 * u.pvalue))
    same = r["posthoc"][0]
    assert same["p_bonferroni"] > 0.05  # identical distributions: no significant difference
    assert all(p["p_bonferroni"] < 1e-10 for p in r["posthoc"][1:3])
    s = r["summary"]["noise"]
    assert s["n"] == 200 and s["q1"] <= s["median"] <= s["q3"]
    assert s["median"] == pytest.approx(np.median(conf["noise"]))


def test_statistics_identical_sets_under_the_null():
    # many repetitions of identical distributions: p-values roughly uniform, AUROC ~ 0.5
    rng = np.random.default_rng(1)
    ps, aucs = [], []
    for _ in range(60):
        r = ood_statistics({"leukocyte": rng.normal(size=50), "x": rng.normal(size=60)})
        ps.append(r["kruskal"]["p"])
        aucs.append(r["auroc"]["x"])
    ps = np.array(ps)
    assert np.mean(ps < 0.05) <= 0.15 and abs(ps.mean() - 0.5) < 0.1
    assert abs(np.mean(aucs) - 0.5) < 0.03


def test_statistics_bonferroni_cap_and_ties():
    r = ood_statistics({"leukocyte": np.ones(5), "a": np.ones(4), "b": np.ones(3)})
    assert r["kruskal"] == {"H": 0.0, "p": 1.0}
    assert all(p["p_bonferroni"] == 1.0 for p in r["posthoc"])
    assert r["auroc"] == {"a": 0.5, "b": 0.5}


def test_statistics_errors():
    with pytest.raises(ValueError, match="reference set 'leukocyte' missing"):
        ood_statistics({"a": np.ones(3), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="at least one"):
        ood_statistics({"leukocyte": np.ones(3)})
    with pytest.raises(ValueError, match="'a' contain NaN"):
        ood_statistics({"leukocyte": np.ones(3), "a": np.array([0.1, np.nan])})
    with pytest.raises(ValueError, match="non-empty"):
        ood_statistics({"leukocyte": np.ones(3), "a": np.zeros(0)})
