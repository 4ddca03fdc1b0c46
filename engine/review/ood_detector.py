"""A feature-space out-of-distribution detector combined with the calibrated confidence.

No single score flags every kind of foreign object (issue 13): the calibrated probability
(``mc_mean_ts``) flags erythrocytes but ranks digits and noise as confident, while distances
in the network's feature space flag digits and noise but not erythrocytes (these sit
*closer* to the class means than leukocytes do, with weak activations). The detector turns
part scores into p-values against the in-distribution validation cells and combines them
with Fisher's method. Parts (:data:`PARTS`; the default :data:`DEFAULT_PARTS`):

``maha``
    Squared Mahalanobis distance of the penultimate features to the nearest class mean,
    with one shared covariance estimated with Ledoit-Wolf shrinkage
    (:class:`sklearn.covariance.LedoitWolf`) on the training cells (Lee et al. 2018).
``norm``
    Two-sided atypicality of the activation strength: ``|log ||f|| - m|`` with ``f`` the
    penultimate features and ``m`` the median over the training cells. Faint objects
    (erythrocytes) give weak activations, digits and noise strong ones.
``conf``
    ``1 - confidence`` of the calibrated measure (default ``mc_mean_ts``).
``knn``
    Cosine distance of the L2-normalised trunk features (the last convolution block,
    flattened) to the ``k``-th nearest training cell (Sun et al. 2022). Trunks wider than
    :data:`MAX_KNN_DIM` are first reduced by PCA fitted on the training cells; the bank
    holds at most :data:`MAX_BANK` training cells.

Each score ``s`` becomes an upper-tail p-value against the validation cells' scores ``v``:
the empirical ``(#{v >= s} + 1) / (n + 1)`` inside the validation range, and beyond the
90th percentile ``t`` the smaller of that and an exponential tail
``0.1 * exp(-(s - t) / beta)`` (``beta`` the mean excess over ``t``), so that scores far
beyond every validation cell keep their order instead of all tying at ``1 / (n + 1)``.
``ood_score = -2 * sum(log p)`` (Fisher); a cell is flagged ``ood`` when its score
exceeds the threshold that keeps ``keep`` (95 %) of the validation cells.

The fitted arrays are stored with the model (``/arrays/ood_*``) and the settings in its
``extra["ood"]``; :meth:`OODDetector.to_model` / :meth:`OODDetector.from_model` convert.
Pure NumPy/scikit-learn: features come from
:func:`hemalens.engine.calibrate.inference.model_features`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_PARTS",
    "PARTS",
    "OODDetector",
    "fit_ood_detector",
    "tail_pvalue",
]

#: Every part the detector can combine.
PARTS = ("maha", "norm", "conf", "knn")
#: The parts of the stored detector (chosen by measurement, benchmarks/RESULTS.md).
DEFAULT_PARTS = ("maha", "norm", "knn", "conf")
#: Training cells kept in the k-NN bank (random, seeded).
MAX_BANK = 2000
#: Trunk features wider than this are reduced by PCA to :data:`PCA_DIM` before k-NN.
MAX_KNN_DIM = 1024
PCA_DIM = 256
#: Upper quantile of the validation scores beyond which the exponential tail applies.
TAIL_QUANTILE = 0.9
_EPS = 1e-12


def tail_pvalue(reference: np.ndarray, scores: np.ndarray,
                tail_quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """Upper-tail p-value of each score against reference (in-distribution) scores.

    Parameters
    ----------
    reference : numpy.ndarray
        ``(n,)`` scores of in-distribution cells (higher = more unusual).
    scores : numpy.ndarray
        ``(N,)`` scores to convert.
    tail_quantile : float
        Beyond this quantile of ``reference`` an exponential tail fitted to the excesses
        continues the empirical p-value.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` p-values in ``(0, 1]``: ``(#{reference >= s} + 1) / (n + 1)``, beyond the
        quantile ``t`` the minimum of that and ``(1 - q) * exp(-(s - t) / beta)``.
    """
    v = np.sort(np.asarray(reference, np.float64))
    s = np.asarray(scores, np.float64)
    n = v.size
    emp = (n - np.searchsorted(v, s, side="left") + 1) / (n + 1)
    t = float(np.quantile(v, tail_quantile))
    excess = v[v > t] - t
    beta = max(float(excess.mean()) if excess.size else 0.0, _EPS)
    tail = (1 - tail_quantile) * np.exp(-np.clip(s - t, 0, None) / beta)
    return np.where(s > t, np.minimum(emp, tail), emp).clip(1e-300, 1.0)


def _reduce(x: np.ndarray, mean: np.ndarray | None,
            components: np.ndarray | None) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if components is None or not np.size(components):
        return x
    return (x - mean) @ np.asarray(components, np.float64).T


def _log_norm(x: np.ndarray) -> np.ndarray:
    return np.log(np.linalg.norm(np.asarray(x, np.float64), axis=1) + _EPS)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


@dataclass
class OODDetector:
    """A fitted detector (see the module docstring).

    Attributes
    ----------
    means : numpy.ndarray
        ``(K, D)`` class means of the penultimate training features.
    precision : numpy.ndarray
        ``(D, D)`` inverse of the Ledoit-Wolf shared covariance.
    norm_median : float
        Median log feature norm of the training cells (the ``norm`` part's centre).
    bank : numpy.ndarray
        ``(M, E)`` L2-normalised (projected) trunk features of training cells (empty
        without the ``knn`` part).
    pca_mean, pca_components : numpy.ndarray
        Trunk projection (``(F,)``, ``(E, F)``); empty when the trunk is used as it is.
    val_parts : numpy.ndarray
        ``(n, len(parts))`` part scores of the validation cells (the p-value reference).
    threshold : float
        ``ood_score`` above which a cell is flagged.
    k : int
        Neighbour rank of the k-NN distance.
    keep : float
        Fraction of validation cells kept below the threshold.
    measure : str
        Confidence measure of the ``conf`` part.
    parts_used : tuple of str
        The combined parts, in the column order of :meth:`parts`.
    maha_mean, maha_components : numpy.ndarray or None
        PCA of penultimate features wider than :data:`MAX_KNN_DIM` (e.g. AlexNet's 4096),
        applied before the Mahalanobis distance so that the stored precision stays small;
        None when the features are used as they are.
    """

    means: np.ndarray
    precision: np.ndarray
    norm_median: float
    bank: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    val_parts: np.ndarray
    threshold: float
    k: int = 20
    keep: float = 0.95
    measure: str = "mc_mean_ts"
    parts_used: tuple[str, ...] = DEFAULT_PARTS
    maha_mean: np.ndarray | None = None
    maha_components: np.ndarray | None = None

    # -- scores ----------------------------------------------------------------------------

    def _project(self, trunk: np.ndarray) -> np.ndarray:
        t = np.asarray(trunk, np.float32)
        if self.pca_components.size:
            t = (t - self.pca_mean) @ self.pca_components.T
        return _unit(t)

    def mahalanobis(self, penultimate: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, ``(N,)``."""
        f = _reduce(penultimate, self.maha_mean, self.maha_components)
        best = np.full(len(f), np.inf)
        for mu in self.means:
            d = f - mu
            best = np.minimum(best, np.einsum("nd,de,ne->n", d, self.precision, d))
        return best

    def knn_distance(self, trunk: np.ndarray) -> np.ndarray:
        """Cosine distance to the ``k``-th nearest training cell, ``(N,)``."""
        q = self._project(trunk)
        k = min(self.k, len(self.bank))
        out = np.empty(len(q))
        for start in range(0, len(q), 1024):
            sim = q[start:start + 1024] @ self.bank.T
            out[start:start + 1024] = 1.0 - np.partition(sim, -k, axis=1)[:, -k]
        return out

    def norm_deviation(self, penultimate: np.ndarray) -> np.ndarray:
        """``|log ||f|| - norm_median|``: atypically weak or strong activations, ``(N,)``."""
        return np.abs(_log_norm(penultimate) - self.norm_median)

    def parts(self, penultimate: np.ndarray, trunk: np.ndarray | None,
              confidence: np.ndarray) -> np.ndarray:
        """Return the part scores (:attr:`parts_used`), ``(N, P)``, higher = more unusual."""
        conf = np.asarray(confidence, np.float64)
        cols = {
            "maha": lambda: self.mahalanobis(penultimate),
            "norm": lambda: self.norm_deviation(penultimate),
            "conf": lambda: 1.0 - conf,
            "knn": lambda: self.knn_distance(np.asarray(trunk)),
        }
        return np.column_stack([cols[p]() for p in self.parts_used])

    def combine(self, parts: np.ndarray) -> np.ndarray:
        """Fisher combination ``-2 sum log p`` of the parts' validation p-values, ``(N,)``."""
        parts = np.asarray(parts, np.float64)
        logp = [np.log(tail_pvalue(self.val_parts[:, j], parts[:, j]))
                for j in range(parts.shape[1])]
        return -2.0 * np.sum(logp, axis=0)

    def score(self, penultimate: np.ndarray, trunk: np.ndarray | None,
              confidence: np.ndarray) -> np.ndarray:
        """Per-cell ``ood_score`` (higher = more likely out of distribution).

        Parameters
        ----------
        penultimate, trunk : numpy.ndarray
            ``(N, D)`` and ``(N, F)`` features of
            :func:`~hemalens.engine.calibrate.inference.model_features` (the trunk is only
            read by the ``knn`` part).
        confidence : numpy.ndarray
            ``(N,)`` confidence of :attr:`measure`.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` float64, >= 0.
        """
        return self.combine(self.parts(penultimate, trunk, confidence))

    def flag(self, ood_score: np.ndarray) -> np.ndarray:
        """``ood_score > threshold``: the ``ood`` flag, ``(N,)`` bool."""
        return np.asarray(ood_score) > self.threshold

    # -- storage ---------------------------------------------------------------------------

    def to_model(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (``ood_*``, for ``save_model(arrays=...)``) and JSON settings (``extra``).

        Returns
        -------
        (dict, dict)
            ``{"ood_means", "ood_precision", "ood_norm_median", "ood_bank", "ood_pca_mean",
            "ood_pca_components", "ood_val_parts"}`` and ``{"threshold", "k", "keep",
            "measure", "parts", "combine", "features"}``.
        """
        arrays: dict[str, np.ndarray] = {
            "ood_means": self.means.astype(np.float64),
            "ood_precision": self.precision.astype(np.float64),
            "ood_norm_median": np.asarray([self.norm_median], np.float64),
            "ood_bank": self.bank.astype(np.float32),  # empty without the knn part
            "ood_pca_mean": self.pca_mean.astype(np.float32),
            "ood_pca_components": self.pca_components.astype(np.float32),
            "ood_val_parts": self.val_parts.astype(np.float64),
        }
        if self.maha_components is not None and self.maha_components.size:
            arrays["ood_maha_mean"] = np.asarray(self.maha_mean, np.float64)
            arrays["ood_maha_components"] = np.asarray(self.maha_components, np.float64)
        settings: dict[str, Any] = {
            "threshold": float(self.threshold), "k": int(self.k), "keep": float(self.keep),
            "measure": self.measure, "parts": list(self.parts_used),
            "combine": "fisher over validation tail p-values",
            "features": {"maha": "penultimate, Ledoit-Wolf shared covariance",
                         "norm": "penultimate, |log norm - training median|",
                         "knn": "trunk, L2-normalised, cosine"},
        }
        return arrays, settings

    @classmethod
    def from_model(cls, meta: Mapping[str, Any]) -> OODDetector | None:
        """Rebuild the detector from :func:`~hemalens.engine.models.store.load_model`'s meta.

        Returns
        -------
        OODDetector or None
            None when the model was stored without a detector (older models).
        """
        arrays = meta.get("arrays") or {}
        settings = (meta.get("extra") or {}).get("ood")
        need = ("ood_means", "ood_precision", "ood_norm_median", "ood_val_parts")
        if not settings or any(k not in arrays for k in need):
            return None
        return cls(
            means=np.asarray(arrays["ood_means"], np.float64),
            precision=np.asarray(arrays["ood_precision"], np.float64),
            norm_median=float(np.asarray(arrays["ood_norm_median"]).reshape(-1)[0]),
            bank=np.asarray(arrays.get("ood_bank", np.zeros((0, 0))), np.float32),
            pca_mean=np.asarray(arrays.get("ood_pca_mean", np.zeros(0)), np.float32),
            pca_components=np.asarray(arrays.get("ood_pca_components", np.zeros((0, 0))),
                                      np.float32),
            val_parts=np.asarray(arrays["ood_val_parts"], np.float64),
            threshold=float(settings["threshold"]),
            k=int(settings.get("k", 20)),
            keep=float(settings.get("keep", 0.95)),
            measure=str(settings.get("measure", "mc_mean_ts")),
            parts_used=tuple(settings.get("parts", DEFAULT_PARTS)),
            maha_mean=arrays.get("ood_maha_mean"),
            maha_components=arrays.get("ood_maha_components"),
        )


def fit_ood_detector(
    train_penultimate: np.ndarray,
    train_trunk: np.ndarray | None,
    train_labels: np.ndarray,
    val_penultimate: np.ndarray,
    val_trunk: np.ndarray | None,
    val_confidence: np.ndarray,
    *,
    parts: tuple[str, ...] = DEFAULT_PARTS,
    k: int = 20,
    keep: float = 0.95,
    measure: str = "mc_mean_ts",
    seed: int = 0,
    max_bank: int = MAX_BANK,
) -> OODDetector:
    """Fit the detector on training cells and set its threshold on validation cells.

    Parameters
    ----------
    train_penultimate, train_trunk : numpy.ndarray
        ``(n, D)``, ``(n, F)`` features of the training cells (the trunk only for
        ``knn``; None otherwise).
    train_labels : numpy.ndarray
        ``(n,)`` class codes ``0 .. K-1``.
    val_penultimate, val_trunk : numpy.ndarray
        Features of the validation cells (never seen in training).
    val_confidence : numpy.ndarray
        ``(n_val,)`` calibrated confidence (``measure``) of the validation cells.
    parts : tuple of str
        Parts to combine (:data:`PARTS`).
    k : int
        Neighbour rank of the k-NN distance.
    keep : float
        Fraction of validation cells below the flag threshold (0 < keep < 1).
    measure : str
        Name of the confidence measure (recorded).
    seed : int
        Seed of the bank subsample.
    max_bank : int
        Most training cells in the k-NN bank.

    Returns
    -------
    OODDetector

    Raises
    ------
    ValueError
        Fewer than 2 training or validation cells, a class without training cells, bad
        ``k`` or ``keep``, or mismatched shapes.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    fp = np.asarray(train_penultimate, np.float64)
    parts = tuple(parts)
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {parts!r}")
    use_knn = "knn" in parts
    ft = np.asarray(train_trunk if use_knn else fp, np.float32)
    y = np.asarray(train_labels, np.int64).reshape(-1)
    if not (0 < keep < 1):
        raise ValueError(f"keep must lie in (0, 1), got {keep!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if len(fp) < 2 or len(fp) != len(ft) or len(fp) != len(y):
        raise ValueError(f"need >= 2 training cells with matching features and labels, got "
                         f"{len(fp)}, {len(ft)}, {len(y)}")
    n_val_trunk = len(val_trunk) if use_knn and val_trunk is not None else len(val_penultimate)
    if len(val_penultimate) < 2 or not (len(val_penultimate) == n_val_trunk
                                          == len(val_confidence)):
        raise ValueError("need >= 2 validation cells with matching features and confidences")
    classes = np.unique(y)
    if y.min() < 0 or classes.size != y.max() + 1:
        raise ValueError("every class 0 .. K-1 needs training cells for the OOD detector")
    maha_mean = maha_components = None
    fm = fp
    if fp.shape[1] > MAX_KNN_DIM:  # e.g. AlexNet's 4096: a 4096^2 precision is 134 MB
        pca = PCA(n_components=min(PCA_DIM, len(fp) - 1), random_state=seed).fit(fp)
        maha_mean, maha_components = pca.mean_, pca.components_
        fm = _reduce(fp, maha_mean, maha_components)
    means = np.stack([fm[y == c].mean(0) for c in classes])
    precision = LedoitWolf().fit(fm - means[y]).precision_
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(ft), size=min(max_bank, len(ft)), replace=False))
    pca_mean, pca_components = np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    if use_knn and ft.shape[1] > MAX_KNN_DIM:
        pca = PCA(n_components=min(PCA_DIM, len(ft) - 1), random_state=seed).fit(ft)
        pca_mean = pca.mean_.astype(np.float32)
        pca_components = pca.components_.astype(np.float32)
    det = OODDetector(means=means, precision=precision,
                      norm_median=float(np.median(_log_norm(fp))),
                      bank=np.zeros((0, 0), np.float32),
                      pca_mean=pca_mean, pca_components=pca_components,
                      val_parts=np.zeros((0, len(parts))), threshold=np.inf,
                      k=int(k), keep=float(keep), measure=measure, parts_used=parts,
                      maha_mean=maha_mean, maha_components=maha_components)
    if use_knn:
        det.bank = det._project(ft[rows])
    det.val_parts = det.parts(val_penultimate, val_trunk, val_confidence)
    det.threshold = float(np.quantile(det.combine(det.val_parts), keep))
    return det
