"""The 2-D map of an embedding shown in the GUI and stored by ``embed train``.

A thin wrapper around openTSNE (``TSNE(...).fit`` and ``TSNEEmbedding.transform``): it
clips the perplexity for tiny data sets, refuses NaN input with a one-line error and
keeps the fitted openTSNE embedding so that new cells can be placed into the same map
without moving the old ones. Quality of a map is measured with scikit-learn's
trustworthiness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TSNEMap", "tsne_map", "trustworthiness"]

MIN_POINTS = 4  # t-SNE needs perplexity >= 1, i.e. (N - 1) / 3 >= 1


def _as_finite_2d(X: Any, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells x features), got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"{name} has NaN or infinite values in {bad} row(s)")
    return X


@dataclass
class TSNEMap:
    """A fitted t-SNE map: the 2-D points of the fitted cells and a way to add new ones.

    Attributes
    ----------
    points : np.ndarray
        ``(N, 2)`` float64 map positions of the fitted rows, in input order.
    perplexity : float
        The perplexity actually used (after clipping for small ``N``).
    n_features : int
        Number of input features the map was fitted on.
    embedding : openTSNE.TSNEEmbedding
        The fitted openTSNE object (kept in memory only; store ``points``).
    """

    points: np.ndarray
    perplexity: float
    n_features: int
    embedding: Any

    def transform(self, X_new: Any) -> np.ndarray:
        """Place new rows into the fixed map (openTSNE's ``TSNEEmbedding.transform``).

        Parameters
        ----------
        X_new : array-like
            ``(M, D)`` rows with the same features as the fitted data.

        Returns
        -------
        np.ndarray
            ``(M, 2)`` float64 positions; the fitted points do not move.
        """
        X_new = _as_finite_2d(X_new, "X_new")
        if X_new.shape[1] != self.n_features:
            raise ValueError(
                f"X_new has {X_new.shape[1]} features, the map was fitted on {self.n_features}"
            )
        if len(X_new) == 0:
            return np.zeros((0, 2))
        # openTSNE places each new point among k reference neighbours at perplexity 5;
        # both must fit the reference set (3 * perplexity <= k <= N - 1).
        k = min(25, len(self.points) - 1)
        perplexity = min(5.0, k / 3)
        return np.asarray(self.embedding.transform(X_new, k=k, perplexity=perplexity), float)


def tsne_map(
    X: Any, *, seed: int = 0, perplexity: float = 30, n_jobs: int = 1, **tsne_kwargs: Any
) -> TSNEMap:
    """Fit an openTSNE map of ``X``.

    Parameters
    ----------
    X : array-like
        ``(N, D)`` feature rows (e.g. cell embeddings), ``N >= 4``, finite.
    seed : int
        Random state of openTSNE (PCA initialisation and neighbour search).
    perplexity : float
        Wanted perplexity; clipped to ``(N - 1) / 3`` for small ``N``.
    n_jobs : int
        Threads openTSNE may use.
    **tsne_kwargs
        Further ``openTSNE.TSNE`` options (e.g. ``n_iter``).

    Returns
    -------
    TSNEMap
        The map points and the fitted embedding.

    Raises
    ------
    ValueError
        Fewer than 4 rows, not 2-D, or NaN/inf values.
    """
    from openTSNE import TSNE  # heavy import, only when a map is made

    X = _as_finite_2d(X)
    n = len(X)
    if n < MIN_POINTS:
        raise ValueError(f"a t-SNE map needs at least {MIN_POINTS} cells, got {n}")
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}")
    used = float(min(perplexity, (n - 1) / 3))
    tsne = TSNE(perplexity=used, n_jobs=n_jobs, random_state=seed, **tsne_kwargs)
    embedding = tsne.fit(X)
    points = np.asarray(embedding, dtype=np.float64)
    return TSNEMap(points=points, perplexity=used, n_features=X.shape[1], embedding=embedding)


def trustworthiness(X: Any, Y: Any, k: int = 10) -> float:
    """Trustworthiness of the map ``Y`` of ``X`` (scikit-learn's implementation).

    Parameters
    ----------
    X : array-like
        ``(N, D)`` original rows.
    Y : array-like
        ``(N, 2)`` mapped rows.
    k : int
        Neighbourhood size; must be below ``N / 2``.

    Returns
    -------
    float
        1 when every map neighbour is also a neighbour in ``X``; lower when the map invents
        neighbourhoods.
    """
    from sklearn.manifold import trustworthiness as _tw

    return float(_tw(np.asarray(X), np.asarray(Y), n_neighbors=k))
