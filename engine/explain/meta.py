"""Meta-explanations over many cells (paper 1, §4.4, Figs. 6-7; appendix A.5).

Two ways to see a model's general detection patterns instead of one cell at a time:

:func:`aggregate_by_confidence`
    The mean explanation map per (given label, confidence bin): paper Fig. 6 groups the
    cells by class label and into "six equally sized bins" of their (calibrated)
    confidence. Here the bins are **equal-width over [0, 1]** by default, the same
    convention as the reliability diagrams (:func:`hemalens.engine.calibrate.bin_index`:
    ``[lo, hi)``, the last bin ``[lo, 1]``). The paper gives no edges; its confidence
    measures (max probability, MC mean/median, the std-based one) all live in [0, 1], and
    [0, 1] keeps one grid comparable between models with different numbers of classes.
    For a max-probability confidence the lowest bins below 1/K then stay empty; pass
    ``lower=1 / n_classes`` to spread the six bins over [1/K, 1] instead (confidences
    below ``lower`` then fall into the first bin).
:func:`cluster_explanations`
    Unsupervised: the flattened maps are embedded in 2-D with t-SNE (openTSNE) and
    k-means (scikit-learn) clusters **the 2-D t-SNE map**, as the paper does ("Applying
    a k-Means clustering, with k equal to the number of classes, on this 2D space"); the
    class composition of each cluster shows whether each class has its own strategy.

Both are pure functions over numpy arrays; rendering is in
:mod:`hemalens.engine.explain.render`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ClusterResult",
    "MIN_CELLS",
    "MetaGrid",
    "aggregate_by_confidence",
    "cluster_explanations",
]

MIN_CELLS = 4  # t-SNE needs perplexity >= 1, i.e. (N - 1) / 3 >= 1


@dataclass
class MetaGrid:
    """Mean explanation maps per (class, confidence bin) (paper 1, Fig. 6).

    Attributes
    ----------
    mean_maps : numpy.ndarray
        float32 ``(K, B, H, W)``; all NaN where a (class, bin) has no cells.
    counts : numpy.ndarray
        int64 ``(K, B)`` number of cells behind each mean map.
    bin_edges : numpy.ndarray
        float64 ``(B + 1,)`` confidence edges; bins are ``[lo, hi)``, the last ``[lo, hi]``.
    skipped : int
        Cells left out (label -1 or NaN confidence).
    """

    mean_maps: np.ndarray
    counts: np.ndarray
    bin_edges: np.ndarray
    skipped: int = 0

    def to_json(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per (class, bin), class-major: ``{"class", "bin": [lo, hi], "n"}``.

        Parameters
        ----------
        class_names : sequence of str, optional
            Names for the class codes; without them ``"class"`` is the code (int).

        Returns
        -------
        list of dict
            JSON-ready rows (the CLI's ``"bins"``).
        """
        k, b = self.counts.shape
        if class_names is not None and len(class_names) != k:
            raise ValueError(f"{len(class_names)} class names for a grid of {k} classes")
        rows = []
        for c in range(k):
            name: Any = str(class_names[c]) if class_names is not None else c
            for j in range(b):
                lo, hi = float(self.bin_edges[j]), float(self.bin_edges[j + 1])
                rows.append({"class": name, "bin": [round(lo, 6), round(hi, 6)],
                             "n": int(self.counts[c, j])})
        return rows


@dataclass
class ClusterResult:
    """Clusters of explanation maps in their 2-D t-SNE map (paper 1, Fig. 7).

    Attributes
    ----------
    embedding : numpy.ndarray
        float64 ``(N, 2)`` t-SNE positions, input order.
    assignment : numpy.ndarray
        int64 ``(N,)`` cluster id of each cell; ids are ordered by cluster size (0 = largest).
    labels : numpy.ndarray
        int64 ``(N,)`` the given labels (-1: unlabelled), kept for plotting.
    clusters : list of dict
        One per cluster id: ``{"id", "size", "composition", "share_of_class",
        "n_unlabelled"}``. ``composition`` maps every class name to the fraction of the
        cluster's *labelled* members with that label (sums to 1; all 0 when none is
        labelled). ``share_of_class`` maps every class name to the fraction of *that
        class's* cells that fall into the cluster -- the normalisation of the paper's bar
        chart, whose sums per cluster can exceed 100 %.
    mean_maps : numpy.ndarray
        float32 ``(k, H, W)`` mean map of each cluster.
    class_names : list of str
        The class names, index = label code.
    perplexity : float
        The t-SNE perplexity used.
    seconds : dict of str to float
        Wall time of the stages: ``"pca"`` (0 when off), ``"tsne"`` and ``"kmeans"``.
    """

    embedding: np.ndarray
    assignment: np.ndarray
    labels: np.ndarray
    clusters: list[dict[str, Any]]
    mean_maps: np.ndarray
    class_names: list[str] = field(default_factory=list)
    perplexity: float = 30.0
    seconds: dict[str, float] = field(default_factory=dict)


def _check_maps(maps: Any) -> np.ndarray:
    a = np.asarray(maps)
    if a.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"maps must be numeric, got {a.dtype}")
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a).reshape(len(a), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"maps has NaN or infinite values in {bad.size} cell(s) (first at row {bad[0]})"
        )
    return a


def _check_labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"labels has shape {lab.shape}, expected ({n},) for {n} maps")
    if lab.size and lab.dtype.kind not in "iu":
        if lab.dtype.kind != "f" or not np.all(lab == np.round(lab)):
            raise ValueError(f"labels must be integer class codes, got {lab.dtype}")
    lab = lab.astype(np.int64)
    bad = (lab < -1) | (lab >= n_classes)
    if bad.any():
        raise ValueError(
            f"labels must be -1 (none) or 0..{n_classes - 1}, got {int(lab[bad][0])}"
        )
    return lab


def aggregate_by_confidence(
    maps: Any,
    labels: Any,
    confidence: Any,
    n_classes: int,
    n_bins: int = 6,
    *,
    lower: float = 0.0,
) -> MetaGrid:
    """Average explanation maps per given label and confidence bin (paper 1, Fig. 6).

    Parameters
    ----------
    maps : array_like
        ``(N, H, W)`` explanation maps, finite.
    labels : array_like of int
        ``(N,)`` class codes ``0..n_classes-1``; -1 (unlabelled) cells are skipped.
    confidence : array_like of float
        ``(N,)`` confidence in ``[0, 1]``; NaN (no prediction) cells are skipped.
    n_classes : int
        Number of classes ``K`` (rows of the grid, also for classes without cells).
    n_bins : int
        Number of equal-width confidence bins ``B`` (paper: 6).
    lower : float
        Lower edge of the first bin (default 0; ``1 / n_classes`` for [1/K, 1]).
        Confidences below it are counted in the first bin.

    Returns
    -------
    MetaGrid
        Mean maps ``(K, B, H, W)`` (NaN where empty), counts ``(K, B)`` and the edges.

    Raises
    ------
    ValueError
        Lengths that differ, maps not 3-D or with NaN/inf, labels out of range,
        confidences outside [0, 1], or bad ``n_classes``/``n_bins``/``lower``.
    """
    if int(n_classes) < 1 or int(n_bins) < 1:
        raise ValueError(f"n_classes and n_bins must be >= 1, got {n_classes}, {n_bins}")
    if not 0.0 <= float(lower) < 1.0:
        raise ValueError(f"lower must be in [0, 1), got {lower}")
    k, b = int(n_classes), int(n_bins)
    m = _check_maps(maps)
    n, h, w = m.shape
    lab = _check_labels(labels, n, k)
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.ndim != 1 or conf.shape[0] != n:
        raise ValueError(f"confidence has shape {conf.shape}, expected ({n},) for {n} maps")
    known = ~np.isnan(conf)
    if np.any((conf[known] < 0) | (conf[known] > 1)):
        raise ValueError("confidence must be in [0, 1] (or NaN for none)")
    edges = np.linspace(float(lower), 1.0, b + 1)
    use = known & (lab >= 0)
    idx = np.clip(np.searchsorted(edges, np.nan_to_num(conf), side="right") - 1, 0, b - 1)
    group = np.where(use, lab * b + idx, -1)

    counts = np.bincount(group[use], minlength=k * b).astype(np.int64)
    sums = np.zeros((k * b, h * w), dtype=np.float64)
    flat = m.reshape(n, h * w)
    # one pass per occupied group (at most K*B of them): memory stays at one group's rows
    for g in np.flatnonzero(counts):
        sums[g] = flat[group == g].sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    mean[counts == 0] = np.nan
    return MetaGrid(
        mean_maps=mean.reshape(k, b, h, w).astype(np.float32),
        counts=counts.reshape(k, b),
        bin_edges=edges,
        skipped=int(n - use.sum()),
    )


def cluster_explanations(
    maps: Any,
    labels: Any,
    n_clusters: int,
    *,
    seed: int = 0,
    class_names: Sequence[str],
    perplexity: float = 30.0,
    n_jobs: int = 1,
    n_init: int = 10,
    pca_components: int | None = None,
) -> ClusterResult:
    """Embed explanation maps with t-SNE and cluster the 2-D map with k-means (paper Fig. 7).

    Parameters
    ----------
    maps : array_like
        ``(N, H, W)`` explanation maps, finite, ``N >= 4`` (flattened for t-SNE as they
        are: no scaling, as in the paper).
    labels : array_like of int
        ``(N,)`` given labels, codes into ``class_names``; -1 = unlabelled (embedded and
        clustered, but not counted in the compositions).
    n_clusters : int
        ``k`` of k-means; the paper uses the number of classes. ``1 <= k <= N``.
    seed : int
        Random state of openTSNE and k-means (same seed, same result).
    class_names : sequence of str
        Class names, index = label code.
    perplexity : float
        Wanted t-SNE perplexity, clipped to ``(N - 1) / 3`` for small ``N``.
    n_jobs : int
        Threads openTSNE may use.
    n_init : int
        k-means restarts (the best inertia wins).
    pca_components : int, optional
        Project the flattened maps onto this many principal components before t-SNE
        (scikit-learn PCA, seeded). Off by default, as in the paper; 50 is the usual
        t-SNE preprocessing and cuts the neighbour search on 50x50 maps about 4-fold
        (``benchmarks/bench_meta_explain.py``).

    Returns
    -------
    ClusterResult
        Embedding, assignment, per-cluster composition and mean maps.

    Raises
    ------
    ValueError
        Fewer than 4 maps, lengths that differ, NaN/inf maps, labels outside the classes,
        or ``n_clusters`` outside ``1..N``.
    """
    from openTSNE import TSNE  # heavy imports only when clustering
    from sklearn.cluster import KMeans

    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("class_names must not be empty")
    m = _check_maps(maps)
    n = len(m)
    lab = _check_labels(labels, n, len(names))
    if n < MIN_CELLS:
        raise ValueError(f"clustering explanations needs at least {MIN_CELLS} maps, got {n}")
    k = int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters must be in 1..{n} (the number of maps), got {n_clusters}")
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}")
    if pca_components is not None and int(pca_components) < 2:
        raise ValueError(f"pca_components must be >= 2 (or None), got {pca_components}")

    used = float(min(perplexity, (n - 1) / 3))
    flat = m.reshape(n, -1).astype(np.float64)
    tsne = TSNE(n_components=2, perplexity=used, random_state=seed, n_jobs=n_jobs,
                verbose=False)
    t_pca = time.perf_counter()
    if pca_components is not None and int(pca_components) < min(flat.shape):
        from sklearn.decomposition import PCA

        flat = PCA(n_components=int(pca_components), random_state=seed).fit_transform(flat)
    t0 = time.perf_counter()
    emb = np.asarray(tsne.fit(flat), dtype=np.float64)
    t1 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(emb)
    t2 = time.perf_counter()
    raw = km.labels_.astype(np.int64)

    # renumber by size (largest first; ties by the lowest k-means id) so ids are stable
    sizes = np.bincount(raw, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    remap = np.empty(k, np.int64)
    remap[order] = np.arange(k)
    assign = remap[raw]

    per_class = np.bincount(lab[lab >= 0], minlength=len(names))
    clusters: list[dict[str, Any]] = []
    mean_maps = np.full((k,) + m.shape[1:], np.nan, np.float32)
    for c in range(k):
        member = assign == c
        mean_maps[c] = m[member].mean(axis=0, dtype=np.float64) if member.any() else np.nan
        ml = lab[member]
        counts = np.bincount(ml[ml >= 0], minlength=len(names))
        total = counts.sum()
        clusters.append({
            "id": c,
            "size": int(member.sum()),
            "composition": {nm: (float(counts[i] / total) if total else 0.0)
                            for i, nm in enumerate(names)},
            "share_of_class": {nm: (float(counts[i] / per_class[i]) if per_class[i] else 0.0)
                               for i, nm in enumerate(names)},
            "n_unlabelled": int((ml < 0).sum()),
        })
    return ClusterResult(embedding=emb, assignment=assign, labels=lab, clusters=clusters,
                         mean_maps=mean_maps, class_names=names, perplexity=used,
                         seconds={"pca": round(t0 - t_pca, 4), "tsne": round(t1 - t0, 4),
                                  "kmeans": round(t2 - t1, 4)})
