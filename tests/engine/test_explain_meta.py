"""Meta-explanations: aggregation by label x confidence bin, clustering of t-SNE maps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from hemalens.engine.explain.meta import aggregate_by_confidence, cluster_explanations

CLASSES = ["lymphocyte", "monocyte", "neutrophil"]


def templates(size: int = 12) -> np.ndarray:
    """Three clearly different explanation patterns: a disc, a ring and a left/right split."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    disc = (r < size / 4).astype(float)
    ring = ((r > size / 3) & (r < size / 2)).astype(float)
    split = np.sign(xx)
    return np.stack([disc, ring, -split])


def hand_aggregate(maps, labels, conf, k, b, lower=0.0):
    edges = np.linspace(lower, 1.0, b + 1)
    sums = np.zeros((k, b) + maps.shape[1:])
    counts = np.zeros((k, b), int)
    for m, lab, c in zip(maps, labels, conf, strict=True):
        if lab < 0 or np.isnan(c):
            continue
        j = b - 1 if c >= edges[-2] else max(0, int(np.searchsorted(edges, c, "right")) - 1)
        sums[lab, j] += m
        counts[lab, j] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts[..., None, None], counts, edges


def test_aggregation_matches_a_hand_loop():
    rng = np.random.default_rng(1)
    n, k = 200, 4
    maps = rng.normal(size=(n, 5, 6)).astype(np.float32)
    labels = rng.integers(-1, k, n)
    conf = rng.uniform(0.25, 1.0, n)
    conf[:6] = [0.0, 1.0, 1 / 6, 0.5, np.nan, 5 / 6]  # edges, exactly 1, none
    labels[:6] = [0, 0, 1, 1, 2, 3]
    grid = aggregate_by_confidence(maps, labels, conf, k)
    want, counts, edges = hand_aggregate(maps.astype(float), labels, conf, k, 6)
    np.testing.assert_allclose(grid.bin_edges, edges)
    np.testing.assert_array_equal(grid.counts, counts)
    assert grid.mean_maps.shape == (k, 6, 5, 6) and grid.mean_maps.dtype == np.float32
    np.testing.assert_allclose(grid.mean_maps, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert grid.skipped == int((labels < 0).sum() + np.isnan(conf[labels >= 0]).sum())
    assert grid.counts.sum() + grid.skipped == n
    # the pinned convention: [lo, hi), last bin closed; 0 -> bin 0, 1/6 -> bin 1, 1 -> bin 5
    assert grid.counts[0, 0] >= 1 and grid.counts[0, 5] >= 1 and grid.counts[1, 1] >= 1


def test_empty_bins_are_nan_and_json_rows():
    maps = np.ones((3, 4, 4))
    grid = aggregate_by_confidence(maps, [0, 0, 1], [0.95, 0.99, 0.1], 3, n_bins=6)
    assert grid.counts.tolist() == [[0, 0, 0, 0, 0, 2], [1, 0, 0, 0, 0, 0], [0] * 6]
    assert np.isnan(grid.mean_maps[2]).all() and np.isnan(grid.mean_maps[0, :5]).all()
    np.testing.assert_array_equal(grid.mean_maps[0, 5], 1.0)
    rows = grid.to_json(CLASSES)
    assert len(rows) == 18 and set(rows[0]) == {"class", "bin", "n"}
    assert rows[5] == {"class": "lymphocyte", "bin": [round(5 / 6, 6), 1.0], "n": 2}
    assert rows[6]["class"] == "monocyte" and rows[6]["bin"] == [0.0, round(1 / 6, 6)]
    assert grid.to_json()[0]["class"] == 0
    with pytest.raises(ValueError, match="2 class names"):
        grid.to_json(CLASSES[:2])


def test_lower_edge_at_chance():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(50, 3, 3))
    labels = rng.integers(0, 4, 50)
    conf = rng.uniform(0.2, 1.0, 50)
    grid = aggregate_by_confidence(maps, labels, conf, 4, lower=0.25)
    want, counts, edges = hand_aggregate(maps, labels, conf, 4, 6, lower=0.25)
    assert grid.bin_edges[0] == 0.25 and grid.bin_edges[-1] == 1.0
    np.testing.assert_array_equal(grid.counts, counts)  # below 0.25 -> first bin
    np.testing.assert_allclose(grid.mean_maps, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    ("maps", "labels", "conf", "match"),
    [
        (np.zeros((3, 2, 2)), [0, 1], [0.5, 0.5, 0.5], r"labels has shape \(2,\)"),
        (np.zeros((3, 2, 2)), [0, 1, 0], [0.5, 0.5], r"confidence has shape \(2,\)"),
        (np.zeros((3, 4)), [0, 1, 0], [0.5] * 3, "must be"),
        (np.full((3, 2, 2), np.nan), [0, 1, 0], [0.5] * 3, "NaN or infinite values in 3"),
        (np.zeros((3, 2, 2)), [0, 5, 0], [0.5] * 3, "got 5"),
        (np.zeros((3, 2, 2)), [0, 1, 0], [0.5, 1.5, 0.5], r"\[0, 1\]"),
    ],
)
def test_aggregation_bad_inputs(maps, labels, conf, match):
    with pytest.raises(ValueError, match=match) as err:
        aggregate_by_confidence(maps, labels, conf, 3)
    assert "\n" not in str(err.value)


def _template_cells(n_per: int = 30, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = templates()
    truth = np.repeat(np.arange(3), n_per)
    rng.shuffle(truth)
    maps = t[truth] + noise * rng.normal(size=(truth.size,) + t.shape[1:])
    return maps.astype(np.float32), truth


def test_clusters_recover_the_templates():
    maps, truth = _template_cells()
    labels = truth.copy()
    labels[:6] = (truth[:6] + 1) % 3  # some mislabelled cells
    labels[6:9] = -1  # and unlabelled ones
    res = cluster_explanations(maps, labels, 3, seed=0, class_names=CLASSES)
    assert res.embedding.shape == (90, 2) and res.assignment.shape == (90,)
    assert adjusted_rand_score(truth, res.assignment) == 1.0
    assert [c["id"] for c in res.clusters] == [0, 1, 2]
    assert sum(c["size"] for c in res.clusters) == 90
    for c in res.clusters:
        member = res.assignment == c["id"]
        lab = labels[member]
        lab = lab[lab >= 0]
        want = {nm: float(np.mean(lab == i)) for i, nm in enumerate(CLASSES)}
        assert c["composition"] == pytest.approx(want)
        assert sum(c["composition"].values()) == pytest.approx(1.0)
        assert c["n_unlabelled"] == int((labels[member] < 0).sum())
        # the mean map of a cluster is its template
        tmpl = templates()[np.bincount(truth[member]).argmax()]
        r = np.corrcoef(res.mean_maps[c["id"]].ravel(), tmpl.ravel())[0, 1]
        assert r > 0.95
    for nm in CLASSES:  # the paper's normalisation: every class's cells add up to 1
        assert sum(c["share_of_class"][nm] for c in res.clusters) == pytest.approx(1.0)
    assert res.perplexity == pytest.approx(89 / 3)  # min(30, (90 - 1) / 3)


def test_clustering_is_kmeans_on_the_tsne_map_and_seeded():
    maps, truth = _template_cells(n_per=15, noise=0.5, seed=3)
    a = cluster_explanations(maps, truth, 3, seed=5, class_names=CLASSES)
    b = cluster_explanations(maps, truth, 3, seed=5, class_names=CLASSES)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    km = KMeans(n_clusters=3, n_init=10, random_state=5).fit(a.embedding)
    assert adjusted_rand_score(km.labels_, a.assignment) == 1.0
    sizes = [c["size"] for c in a.clusters]
    assert sizes == sorted(sizes, reverse=True)


def test_optional_pca_before_tsne_finds_the_same_clusters():
    maps, truth = _template_cells(n_per=15, noise=0.5, seed=4)
    res = cluster_explanations(maps, truth, 3, class_names=CLASSES, pca_components=5)
    assert adjusted_rand_score(truth, res.assignment) == 1.0
    assert set(res.seconds) == {"pca", "tsne", "kmeans"}
    with pytest.raises(ValueError, match="pca_components"):
        cluster_explanations(maps, truth, 3, class_names=CLASSES, pca_components=1)


def test_tiny_sets_clip_the_perplexity():
    maps, truth = _template_cells(n_per=2, seed=1)  # 6 cells
    res = cluster_explanations(maps[:4], truth[:4], 2, class_names=CLASSES)
    assert res.perplexity == 1.0 and res.embedding.shape == (4, 2)
    assert np.isfinite(res.embedding).all()


@pytest.mark.parametrize(
    ("n", "labels", "k", "nan", "match"),
    [
        (3, [0, 1, 2], 2, False, "at least 4 maps, got 3"),
        (6, [0, 1, 2, 0, 1], 2, False, r"labels has shape \(5,\)"),
        (6, [0, 1, 2, 0, 1, 2], 7, False, r"n_clusters must be in 1..6"),
        (6, [0, 1, 2, 0, 1, 2], 2, True, "NaN or infinite values in 1 cell"),
        (6, [0, 1, 2, 0, 1, 3], 2, False, "got 3"),
    ],
)
def test_clustering_bad_inputs(n, labels, k, nan, match):
    maps = np.random.default_rng(0).normal(size=(n, 4, 4))
    if nan:
        maps[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match=match) as err:
        cluster_explanations(maps, labels, k, class_names=CLASSES)
    assert "\n" not in str(err.value)
