"""The std-based confidence of paper Table 2 ("std.dev."), defined precisely.

The paper treats the MC-dropout standard deviation as an uncertainty and reports a
confidence derived from it without saying how. Ours:

    confidence(cell) = g(s),   s = std over the T MC passes of the probability of the
                                   predicted class (the argmax of the MC mean),

where ``g`` is a non-increasing map ``[0, inf) -> [0, 1]`` fitted by isotonic regression
(``sklearn.isotonic.IsotonicRegression(increasing=False)``, least squares) of the 0/1
correctness of the validation predictions on their ``s``. ``g`` is piecewise linear
between the fitted thresholds and constant beyond the outermost ones. Isotonic regression
of a 0/1 target is the empirical probability of being correct given ``s`` under the
single assumption that more spread never means more likely correct; it is calibrated on
its fit set by construction, so judge it on the test split only.
"""

from __future__ import annotations

import numpy as np


class StdConfidence:
    """Monotone map from the predicted class's MC standard deviation to P(correct).

    Fit on the validation split with :meth:`fit`, apply with ``__call__``, store with
    :meth:`to_dict` / :meth:`from_dict` (plain lists, JSON-safe).
    """

    def __init__(self) -> None:
        self.x_: np.ndarray | None = None  # thresholds in std, increasing
        self.y_: np.ndarray | None = None  # P(correct) at the thresholds, non-increasing

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` or :meth:`from_dict` has set the map."""
        return self.x_ is not None

    def fit(self, std_pred, correct) -> StdConfidence:
        """Fit the map by isotonic (non-increasing) regression.

        Parameters
        ----------
        std_pred : array_like, shape (N,)
            MC standard deviation of the predicted class's probability, per cell.
        correct : array_like of bool, shape (N,)
            Whether each cell's MC-mean prediction was right.

        Returns
        -------
        StdConfidence
            ``self``.
        """
        from sklearn.isotonic import IsotonicRegression

        s = np.asarray(std_pred, dtype=np.float64).ravel()
        c = np.asarray(correct).ravel()
        if s.size == 0:
            raise ValueError("StdConfidence.fit needs at least one cell, got none")
        if c.shape != s.shape:
            raise ValueError(f"std_pred and correct differ in length: {s.size} vs {c.size}")
        if not np.all(np.isfinite(s)) or s.min() < 0:
            raise ValueError("std_pred must be finite and >= 0")
        if c.dtype != bool and not np.all(np.isin(c, (0, 1))):
            raise ValueError("correct must be boolean or 0/1")
        iso = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(s, c.astype(np.float64))
        self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def __call__(self, std_pred) -> np.ndarray:
        """Return the confidence for each standard deviation.

        Parameters
        ----------
        std_pred : array_like
            MC standard deviation of the predicted class's probability.

        Returns
        -------
        ndarray of float64
            Values in ``[0, 1]``, same shape as ``std_pred``.
        """
        if self.x_ is None or self.y_ is None:
            raise RuntimeError("StdConfidence is not fitted; call fit() or from_dict() first")
        s = np.asarray(std_pred, dtype=np.float64)
        # np.interp clamps beyond the end points, as out_of_bounds="clip" does.
        return np.interp(s, self.x_, self.y_)

    def to_dict(self) -> dict:
        """Return the fitted map as ``{"kind", "std", "confidence"}`` (JSON-safe lists)."""
        if self.x_ is None or self.y_ is None:
            raise RuntimeError("StdConfidence is not fitted; nothing to store")
        return {
            "kind": "isotonic_std",
            "std": self.x_.tolist(),
            "confidence": self.y_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StdConfidence:
        """Rebuild a map stored with :meth:`to_dict`.

        Parameters
        ----------
        d : dict
            ``{"kind": "isotonic_std", "std": [...], "confidence": [...]}``.

        Returns
        -------
        StdConfidence
        """
        if d.get("kind") != "isotonic_std":
            raise ValueError(f"not a stored StdConfidence: kind={d.get('kind')!r}")
        x = np.asarray(d["std"], dtype=np.float64)
        y = np.asarray(d["confidence"], dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0 or np.any(np.diff(x) < 0):
            raise ValueError("stored StdConfidence has malformed thresholds")
        out = cls()
        out.x_, out.y_ = x, y
        return out

    def __repr__(self) -> str:
        n = 0 if self.x_ is None else self.x_.size
        return f"StdConfidence(thresholds={n})"
