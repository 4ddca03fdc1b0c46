"""Automatic latent interventions (ALI, paper 2 §III A-C, E): class-wise affine transforms.

Each iteration picks one class cluster with a criterion Ω and moves it with
θ = shift ∘ rotate ∘ contract, evaluated on the *currently intervened* embedding. The steps
compose into one affine map per class, θ_c(x) = R_c x + T_c, whose image of the network's
embedding is the target of the L1 intervention loss in the next epoch.

Readings of the paper that it leaves open (all are tested):

* std(X_c) is the pooled per-coordinate standard deviation ``sqrt(trace(Cov X_c) / d)``.
  It sets the shift length ``λ_s·std`` (a 256-d cluster's RMS radius is 16× that, which would
  make λ_s = 4 throw clusters across the whole embedding) and enters the mean-std logit,
  where any constant factor cancels.
* The shift length applies λ_s once (the paper writes both ``x + λ_s v_c`` and
  ``v_c = λ_s std v_both/‖v_both‖``).
* The steps of one iteration are applied one after the other: the rotation acts on the
  contracted cluster, the shift is computed from the rotated centre and the contracted spread.
  The neighbours (the n nearest other centres) are fixed at the start of the iteration.
* Rotations are about the origin (the embedding of a triplet network lives on a sphere), so
  they preserve every norm. See :func:`rotation_matrix` for the angle α(λ_r).
* v_shift and v_ortho are each scaled to unit length before the γ-mix, so γ is a direction
  weight and not a comparison of two unrelated magnitudes. v_ortho uses every pair of the n
  neighbours (one line for n = 2 as in Fig. 3; none for n = 1, then v_ortho = 0). A zero
  v_both (e.g. n = 1 and γ = 0) means no shift in that iteration.
* ``types`` says which transforms run; γ only matters with both "s" and "os" (otherwise
  "s" alone is γ = 1 and "os" alone is γ = 0).
* Norm renormalisation after each iteration: see :func:`compute_interventions`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

__all__ = [
    "CRITERIA",
    "RENORMALISE",
    "TYPES",
    "ClassTransforms",
    "InterventionParams",
    "InterventionState",
    "check_embedding",
    "choose_cluster",
    "class_weights",
    "cluster_logits",
    "compute_interventions",
    "contraction",
    "intervention_loss",
    "intervention_step",
    "iter_interventions",
    "renormalise_shifts",
    "rotation_matrix",
    "shift_vector",
]

TYPES = ("c", "s", "os", "r")  # contraction, shift, ortho-shift, rotation (canonical order)
CRITERIA = ("nearest", "mean-std", "mean-all", "mean-std*mean-all")
RENORMALISE = ("scale", "shifts", "off")
_EPS = 1e-12


@dataclass(frozen=True)
class InterventionParams:
    """Which transforms run, their strengths and how the cluster is chosen.

    Parameters
    ----------
    types : tuple of str
        Non-empty subset of ("c", "s", "os", "r"): contraction, shift, ortho-shift, rotation.
        Stored in that canonical order.
    lambda_c : float
        Contraction strength in [0, 1): x -> x + λ_c (c̄ - x).
    lambda_r : float
        Rotation strength in [0, 1]: 0 keeps a cluster, 1 turns it onto -(neighbour).
    lambda_s : float
        Shift length in units of the cluster's std (>= 0).
    gamma : float
        Weight of v_shift against v_ortho in [0, 1] (used when both "s" and "os" run).
    criterion : str
        One of "nearest", "mean-std", "mean-all", "mean-std*mean-all" (see
        :func:`cluster_logits`).
    probabilistic : bool
        Sample the cluster from the normalised logits instead of taking the argmax.
    neighbours : int
        Number n of nearest other clusters used by rotation and shifts (>= 1).
    """

    types: tuple[str, ...]
    lambda_c: float = 0.5
    lambda_r: float = 0.32
    lambda_s: float = 1.0
    gamma: float = 0.5
    criterion: str = "mean-std*mean-all"
    probabilistic: bool = False
    neighbours: int = 15

    def __post_init__(self) -> None:
        types = (self.types,) if isinstance(self.types, str) else tuple(self.types)
        bad = [t for t in types if t not in TYPES]
        if not types or bad or len(set(types)) != len(types):
            raise ValueError(
                f"types must be a non-empty subset of {TYPES} without repeats, got {self.types!r}"
            )
        object.__setattr__(self, "types", tuple(t for t in TYPES if t in types))
        for name, lo, hi, hi_open in (
            ("lambda_c", 0.0, 1.0, True),
            ("lambda_r", 0.0, 1.0, False),
            ("lambda_s", 0.0, np.inf, True),
            ("gamma", 0.0, 1.0, False),
        ):
            v = getattr(self, name)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or v < lo or (v >= hi if hi_open else v > hi):
                span = f"[{lo:g}, {hi:g})" if hi_open else f"[{lo:g}, {hi:g}]"
                raise ValueError(f"{name} must be a number in {span}, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if not isinstance(self.probabilistic, bool | np.bool_):
            raise ValueError(f"probabilistic must be True or False, got {self.probabilistic!r}")
        object.__setattr__(self, "probabilistic", bool(self.probabilistic))
        n = self.neighbours
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"neighbours must be an integer >= 1, got {n!r}")
        object.__setattr__(self, "neighbours", int(n))

    @property
    def effective_gamma(self) -> float:
        """γ as used: 1 with "s" only, 0 with "os" only, ``gamma`` with both."""
        if "s" in self.types and "os" in self.types:
            return self.gamma
        return 1.0 if "s" in self.types else 0.0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (``types`` as a list)."""
        d = asdict(self)
        d["types"] = list(self.types)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> InterventionParams:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown intervention parameters: {', '.join(extra)}")
        kw = dict(d)
        if "types" in kw:
            kw["types"] = tuple(kw["types"]) if not isinstance(kw["types"], str) else kw["types"]
        return cls(**kw)


@dataclass
class ClassTransforms:
    """One affine map per class, θ_c(x) = R_c x + T_c.

    Parameters
    ----------
    R : ndarray, shape (K, d, d)
        Linear parts (rotation times contraction factors).
    T : ndarray, shape (K, d)
        Translations.
    """

    R: np.ndarray
    T: np.ndarray

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64)
        self.T = np.asarray(self.T, dtype=np.float64)
        k, d = self.T.shape if self.T.ndim == 2 else (-1, -1)
        if self.R.shape != (k, d, d):
            raise ValueError(
                f"R must have shape (K, d, d) and T (K, d), got {self.R.shape} and {self.T.shape}"
            )

    @classmethod
    def identity(cls, n_classes: int, dim: int) -> ClassTransforms:
        """Return identity transforms for ``n_classes`` classes in ``dim`` dimensions."""
        return cls(np.tile(np.eye(dim), (n_classes, 1, 1)), np.zeros((n_classes, dim)))

    @property
    def n_classes(self) -> int:
        """Number of classes K."""
        return self.T.shape[0]

    def apply(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Transform each row with its class's map.

        Parameters
        ----------
        X : ndarray, shape (N, d)
            Embeddings.
        y : ndarray, shape (N,)
            Class codes 0..K-1.

        Returns
        -------
        ndarray, shape (N, d)
            θ_{y_i}(x_i) for every row.
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[1] != self.T.shape[1] or y.shape != (X.shape[0],):
            raise ValueError(
                f"X must be (N, {self.T.shape[1]}) and y (N,), got {X.shape} and {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"class codes must lie in 0..{self.n_classes - 1}")
        out = np.empty_like(X)
        for c in np.unique(y):
            m = y == c
            out[m] = X[m] @ self.R[c].T + self.T[c]
        return out

    def compose(self, c: int, R_i: np.ndarray, T_i: np.ndarray) -> None:
        """Follow class ``c``'s map by x -> R_i x + T_i: R_c <- R_i R_c, T_c <- R_i T_c + T_i."""
        self.R[c] = R_i @ self.R[c]
        self.T[c] = R_i @ self.T[c] + T_i

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Return ``{"R": R, "T": T}`` (copies), e.g. for ``np.savez``."""
        return {"R": self.R.copy(), "T": self.T.copy()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ClassTransforms:
        """Rebuild from a mapping with keys "R" and "T" (e.g. a loaded npz)."""
        return cls(np.array(arrays["R"], dtype=np.float64), np.array(arrays["T"], dtype=np.float64))


# --------------------------------------------------------------------------- inputs


def check_embedding(
    X: np.ndarray, y: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate an embedding and its labels.

    Parameters
    ----------
    X : array_like, shape (N, d)
        Finite embeddings.
    y : array_like, shape (N,)
        Integer class codes >= 0.
    n_classes : int, optional
        K; defaults to ``max(y) + 1``. Classes without samples are allowed.

    Returns
    -------
    X : ndarray of float64
    y : ndarray of int64
    n_classes : int

    Raises
    ------
    ValueError
        One line naming the problem: wrong shapes, NaN/inf, fewer than two classes, a class
        with a single sample.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, d) array, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"labels must have shape ({X.shape[0]},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class codes, got dtype {y.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"embeddings contain {int(np.sum(~np.isfinite(X)))} NaN or inf values")
    if y.min() < 0:
        raise ValueError("labels must be >= 0")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.max() >= k:
        raise ValueError(f"label {int(y.max())} outside 0..{k - 1}")
    counts = np.bincount(y, minlength=k)
    if np.count_nonzero(counts) < 2:
        raise ValueError("interventions need at least two classes, got one")
    single = np.flatnonzero(counts == 1)
    if single.size:
        raise ValueError(f"class {int(single[0])} has a single sample; each class needs two")
    return X, y.astype(np.int64), k


def _class_sums(V: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Per-class row sums (K, d); a one-hot product, far faster than ``np.add.at``."""
    onehot = (y[None, :] == np.arange(k)[:, None]).astype(V.dtype)
    return onehot @ V


def _stats(X: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (K, d), pooled per-coordinate std (K,) and presence mask (K,)."""
    counts = np.bincount(y, minlength=k)
    present = counts > 0
    centres = _class_sums(X, y, k)
    centres[present] /= counts[present, None]
    sq = np.bincount(y, weights=np.sum((X - centres[y]) ** 2, axis=1), minlength=k)
    std = np.zeros(k)
    std[present] = np.sqrt(sq[present] / (counts[present] * X.shape[1]))
    return centres, std, present


def _pooled_std(Xc: np.ndarray) -> float:
    return float(np.sqrt(np.mean((Xc - Xc.mean(axis=0)) ** 2)))


# --------------------------------------------------------------------------- transforms


def contraction(Xc: np.ndarray, lambda_c: float) -> tuple[np.ndarray, np.ndarray]:
    """Contraction x -> x + λ_c (c̄ - x) of one cluster as an affine map.

    Parameters
    ----------
    Xc : ndarray, shape (n, d)
        The cluster's current embeddings.
    lambda_c : float
        Strength in [0, 1).

    Returns
    -------
    R : ndarray, shape (d, d)
        (1 - λ_c) I.
    T : ndarray, shape (d,)
        λ_c c̄.
    """
    Xc = np.asarray(Xc, dtype=np.float64)
    d = Xc.shape[1]
    return (1.0 - lambda_c) * np.eye(d), lambda_c * Xc.mean(axis=0)


def _rotation_factor(v_i: np.ndarray, v_j: np.ndarray, lambda_r: float):
    """Return (U (d, 2), G (2, 2)) with R_ij = I + U G Uᵀ, or None when undefined."""
    ni_norm = np.linalg.norm(v_i)
    if ni_norm < _EPS:
        return None
    n_i = v_i / ni_norm
    cos_b = float(n_i @ v_j)
    v_perp = v_j - cos_b * n_i  # v'_j: Gram-Schmidt of v_j against n_i
    perp_norm = float(np.linalg.norm(v_perp))
    if perp_norm < _EPS * max(1.0, float(np.linalg.norm(v_j))):
        return None  # v_j on the line through v_i: the plane is undefined
    n_j = v_perp / perp_norm
    beta = np.arctan2(perp_norm, cos_b)  # angle between v_i and v_j in [0, π]
    alpha = -lambda_r * (np.pi - beta)
    s, c1 = np.sin(alpha), np.cos(alpha) - 1.0
    G = np.array([[c1, -s], [s, c1]])
    return np.stack([n_i, n_j], axis=1), G


def rotation_matrix(v_i: np.ndarray, v_j: np.ndarray, lambda_r: float) -> np.ndarray:
    """Rotation R_ij(λ_r) of eq. 3-4 that turns v_i away from v_j.

    The rotation acts in the plane spanned by n_i = v_i/‖v_i‖ and n'_j (v_j made orthogonal
    to n_i); R n_i = cos α n_i + sin α n'_j. With β the angle between v_i and v_j, "0 maps
    c1 onto c1 whilst 1 maps c1 onto -c2" is read as α(λ_r) = -λ_r (π - β): λ_r = 0 is the
    identity, λ_r = 1 turns v_i onto the ray of -v_j (its norm is kept), and the angle
    between the two grows linearly from β to π. The negative sign turns away from v_j.

    Parameters
    ----------
    v_i, v_j : ndarray, shape (d,)
        Centre of the cluster to rotate and of its neighbour (about the origin).
    lambda_r : float
        Strength in [0, 1].

    Returns
    -------
    ndarray, shape (d, d)
        Orthonormal with determinant 1; the identity when v_i = 0 or v_j ∥ v_i.
    """
    v_i = np.asarray(v_i, dtype=np.float64)
    d = v_i.shape[0]
    f = _rotation_factor(v_i, np.asarray(v_j, dtype=np.float64), lambda_r)
    if f is None:
        return np.eye(d)
    U, G = f
    return np.eye(d) + U @ G @ U.T


def _rotation_product(v_c: np.ndarray, neighbour_centres: np.ndarray, lambda_r: float):
    """R_c(λ_r) = ∏_k R_ck(λ_r) (eq. 2), factors built from the same centre v_c.

    The nearest neighbour's factor is applied first (rightmost). Each factor is a rank-2
    update, so the product costs O(n d²) instead of O(n d³).
    """
    d = v_c.shape[0]
    M = np.eye(d)
    for v_k in neighbour_centres:
        f = _rotation_factor(v_c, v_k, lambda_r)
        if f is not None:
            U, G = f
            M = M + U @ (G @ (U.T @ M))
    return M


def shift_vector(
    centres: np.ndarray,
    c: int,
    neighbours: np.ndarray | int,
    gamma: float,
    lambda_s: float,
    std_c: float,
) -> np.ndarray:
    """Shift v_c = λ_s std(X_c) v_both/‖v_both‖ that moves cluster ``c`` off its neighbours.

    v_shift = Σ_k (c̄ - c̄_k)/‖c̄ - c̄_k‖²: unit directions away from each neighbour centre,
    weighted by inverse distance. v_ortho = Σ_{k<l} u_kl/‖u_kl‖², u_kl = c̄ - p_kl with p_kl
    the foot of the perpendicular from c̄ onto the line through c̄_k and c̄_l: unit vectors
    towards c̄ orthogonal to that line, weighted by the inverse distance to it (all pairs of
    neighbours). v_both = γ v̂_shift + (1 - γ) v̂_ortho with both parts scaled to unit length.

    Parameters
    ----------
    centres : ndarray, shape (K, d)
        Current class centres.
    c : int
        The cluster to shift.
    neighbours : ndarray of int or int
        Indices of the neighbouring clusters, nearest first, or their number n (then the n
        nearest other centres are used).
    gamma : float
        Weight of v_shift (1: away from neighbours only, 0: orthogonal only).
    lambda_s : float
        Length in units of ``std_c``.
    std_c : float
        std(X_c) (pooled per-coordinate).

    Returns
    -------
    ndarray, shape (d,)
        The shift; zeros when v_both vanishes.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if isinstance(neighbours, int | np.integer):
        dist = np.linalg.norm(centres - centres[c], axis=1)
        dist[c] = np.inf
        nb = np.argsort(dist, kind="stable")[: int(neighbours)]
    else:
        nb = np.asarray(neighbours, dtype=np.int64)
    cbar = centres[c]
    v_both = np.zeros_like(cbar)
    if gamma > 0:
        diff = cbar - centres[nb]
        d2 = np.maximum(np.sum(diff**2, axis=1), _EPS)
        v_shift = np.sum(diff / d2[:, None], axis=0)
        nrm = np.linalg.norm(v_shift)
        if nrm > _EPS:
            v_both += gamma * v_shift / nrm
    if gamma < 1 and nb.size >= 2:
        ii, jj = np.triu_indices(nb.size, k=1)
        a, b = centres[nb[ii]], centres[nb[jj]]
        line = b - a
        ll = np.maximum(np.sum(line**2, axis=1), _EPS)
        t = np.sum((cbar - a) * line, axis=1) / ll
        u = cbar - (a + t[:, None] * line)
        u2 = np.sum(u**2, axis=1)
        ok = u2 > _EPS
        v_ortho = np.sum(u[ok] / u2[ok, None], axis=0)
        nrm = np.linalg.norm(v_ortho)
        if nrm > _EPS:
            v_both += (1.0 - gamma) * v_ortho / nrm
    nrm = np.linalg.norm(v_both)
    if nrm < _EPS:
        return np.zeros_like(cbar)
    return lambda_s * std_c * v_both / nrm


# --------------------------------------------------------------------------- criterion


def cluster_logits(
    centres: np.ndarray, std: np.ndarray, present: np.ndarray, criterion: str
) -> np.ndarray:
    """Logits l_i of the choice criterion Ω (0 for absent classes).

    With d_ij the L2 distance between centres of present classes:

    * "nearest": 1 / min_j d_ij (its argmax is the paper's argmin of nearest-centre
      distance; a tie between the two clusters of the closest pair goes to the lower code);
    * "mean-std": std(X_i) / min_j d_ij;
    * "mean-all": 1 / d_all,i with d_all,i = mean_{j≠i} d_ij over all other present classes;
    * "mean-std*mean-all": the product of the two.

    Distances are floored at 1e-12 so coinciding centres give large, finite logits. If all
    logits are 0 (every spread 0), "nearest" is used instead.

    Parameters
    ----------
    centres : ndarray, shape (K, d)
    std : ndarray, shape (K,)
    present : ndarray of bool, shape (K,)
    criterion : str

    Returns
    -------
    ndarray, shape (K,)
        Non-negative logits.
    """
    idx = np.flatnonzero(present)
    C = centres[idx]
    D = np.sqrt(np.maximum(np.sum((C[:, None, :] - C[None, :, :]) ** 2, axis=2), 0.0))
    D = np.maximum(D, _EPS)
    np.fill_diagonal(D, np.inf)
    dmin = D.min(axis=1)
    np.fill_diagonal(D, 0.0)
    dall = D.sum(axis=1) / (idx.size - 1)
    if criterion == "nearest":
        sub = 1.0 / dmin
    elif criterion == "mean-std":
        sub = std[idx] / dmin
    elif criterion == "mean-all":
        sub = 1.0 / dall
    elif criterion == "mean-std*mean-all":
        sub = std[idx] / dmin / dall
    else:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not np.any(sub > 0):
        sub = 1.0 / dmin
    out = np.zeros(centres.shape[0])
    out[idx] = sub
    return out


def _choose(logits: np.ndarray, probabilistic: bool, rng: np.random.Generator) -> int:
    if not probabilistic:
        return int(np.argmax(logits))
    return int(rng.choice(logits.size, p=logits / logits.sum()))


def choose_cluster(
    X: np.ndarray,
    y: np.ndarray,
    params: InterventionParams,
    rng: np.random.Generator | int | None = None,
) -> int:
    """Pick the class to intervene on next (criterion Ω).

    Deterministic: the argmax of :func:`cluster_logits`. Probabilistic: a draw from
    P_i = l_i / Σ_j l_j.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        The current (intervened) embedding.
    y : ndarray, shape (N,)
        Class codes.
    params : InterventionParams
    rng : numpy Generator, int or None
        Random source for the probabilistic criterion.

    Returns
    -------
    int
        The chosen class code.
    """
    X, y, k = check_embedding(X, y)
    centres, std, present = _stats(X, y, k)
    logits = cluster_logits(centres, std, present, params.criterion)
    return _choose(logits, params.probabilistic, np.random.default_rng(rng))


# --------------------------------------------------------------------------- iterations


def _step(
    Xc: np.ndarray,
    c: int,
    centres: np.ndarray,
    present: np.ndarray,
    params: InterventionParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One iteration's affine map (R_i, T_i) for cluster c and its shift part v."""
    d = Xc.shape[1]
    cbar = Xc.mean(axis=0)
    std_c = _pooled_std(Xc)
    others = np.flatnonzero(present)
    others = others[others != c]
    dist = np.linalg.norm(centres[others] - cbar, axis=1)
    nb = others[np.argsort(dist, kind="stable")[: params.neighbours]]

    R = np.eye(d)
    T = np.zeros(d)
    if "c" in params.types:  # x -> (1-λ)x + λ c̄; the centre stays, the spread shrinks
        R, T = contraction(Xc, params.lambda_c)
        std_c *= 1.0 - params.lambda_c
    if "r" in params.types and params.lambda_r > 0:
        Rot = _rotation_product(cbar, centres[nb], params.lambda_r)
        R, T = Rot @ R, Rot @ T
        cbar = Rot @ cbar
    v = np.zeros(d)
    if ("s" in params.types or "os" in params.types) and params.lambda_s > 0:
        cur = centres.copy()
        cur[c] = cbar
        v = shift_vector(cur, c, nb, params.effective_gamma, params.lambda_s, std_c)
        T = T + v
    return R, T, v


def intervention_step(
    X: np.ndarray,
    y: np.ndarray,
    params: InterventionParams,
    rng: np.random.Generator | int | None = None,
) -> tuple[int, np.ndarray, np.ndarray]:
    """One ALI iteration θ^i = shift ∘ rotate ∘ contract on the current embedding.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        The currently intervened embedding.
    y : ndarray, shape (N,)
        Class codes.
    params : InterventionParams
    rng : numpy Generator, int or None
        For the probabilistic criterion.

    Returns
    -------
    c : int
        The chosen class.
    R_i : ndarray, shape (d, d)
    T_i : ndarray, shape (d,)
        The step x -> R_i x + T_i for class ``c`` (no renormalisation, which needs the
        accumulated shifts; see :func:`compute_interventions`).
    """
    X, y, k = check_embedding(X, y)
    centres, std, present = _stats(X, y, k)
    c = _choose(
        cluster_logits(centres, std, present, params.criterion),
        params.probabilistic,
        np.random.default_rng(rng),
    )
    R, T, _ = _step(X[y == c], c, centres, present, params)
    return c, R, T


def renormalise_shifts(
    Y: np.ndarray, y: np.ndarray, S: np.ndarray, target_sq: float
) -> float:
    """Return the common factor s on all accumulated shift vectors that restores the norm.

    This is the literal reading of the paper's sentence (renormalisation mode "shifts"):
    the transformed embedding is Y_i + s S_{y_i}, Y being it without the shifts' share, and
    the root-mean-square point norm must equal the original's, ``mean ‖Y_i + s S_{y_i}‖² =
    target_sq``: a quadratic in s. The non-negative root closest to 1 is returned, or the
    s >= 0 that comes closest when none exists. On a sphere (an L2-normalised triplet
    embedding) without contraction, a shift with any outward component then has s = 0:
    scaling translations alone cannot keep the norm, which is why "scale" is the default.

    Parameters
    ----------
    Y : ndarray, shape (N, d)
    y : ndarray, shape (N,)
    S : ndarray, shape (K, d)
        Accumulated shift vector per class.
    target_sq : float
        Mean squared point norm to keep (that of the original embedding).

    Returns
    -------
    float
        The factor s >= 0.
    """
    counts = np.bincount(y, minlength=S.shape[0])
    a = float(np.sum(counts * np.sum(S**2, axis=1)))
    sums = _class_sums(Y, y, S.shape[0])
    b = float(np.sum(S * sums))
    c0 = float(np.sum(Y**2)) - target_sq * Y.shape[0]
    return _shift_factor(a, b, c0)


def _shift_factor(a: float, b: float, c0: float) -> float:
    """Solve a s² + 2 b s + c0 = 0 for s >= 0, the root closest to 1 (1 when a = 0)."""
    if a <= 0:
        return 1.0
    disc = b * b - a * c0
    if disc < 0:
        return max(0.0, -b / a)
    roots = [r for r in ((-b - np.sqrt(disc)) / a, (-b + np.sqrt(disc)) / a) if r >= 0]
    return float(min(roots, key=lambda r: abs(r - 1.0))) if roots else max(0.0, -b / a)


class InterventionState:
    """What :func:`iter_interventions` yields after each iteration (a live view).

    Attributes
    ----------
    iteration : int
        1-based iteration number.
    chosen : int
        The class moved in this iteration.
    transforms : ClassTransforms
        Accumulated maps so far (live object; copy before keeping it).
    changed : ndarray of bool, shape (K,)
        Classes whose points moved in this iteration.
    scale : float
        The renormalisation factor of this iteration (1.0 when none applied).
    """

    def __init__(self, iteration, chosen, transforms, changed, scale, raw, a, b, masks):
        self.iteration, self.chosen, self.transforms = iteration, chosen, transforms
        self.changed, self.scale = changed, scale
        self._raw, self._a, self._b, self._masks = raw, a, b, masks

    def embedding(self, out: np.ndarray | None = None) -> np.ndarray:
        """Return the current intervened embedding, equal to ``transforms.apply(X, y)``.

        Parameters
        ----------
        out : ndarray, shape (N, d), optional
            Array to fill (saves an allocation per iteration).

        Returns
        -------
        ndarray, shape (N, d)
        """
        if out is None:
            n = sum(int(m.size) for m in self._masks)
            out = np.empty((n, self._b.shape[1]))
        for c, m in enumerate(self._masks):
            if m.size:
                out[m] = self._a[c] * self._raw[c] + self._b[c]
        return out


def iter_interventions(
    X: np.ndarray,
    y: np.ndarray,
    params: InterventionParams,
    iterations: int,
    *,
    rng: np.random.Generator | int | None = None,
    n_classes: int | None = None,
    renormalise: str = "scale",
) -> Iterator[InterventionState]:
    """Run ALI iteration by iteration (see :func:`compute_interventions`).

    Only the chosen cluster's rows are transformed per iteration; centres, spreads and
    squared norms are kept per class, and a renormalisation (a common scale or common
    translations) is applied lazily, so an iteration costs O(N_c d² + K d) and not O(N d²).

    Yields
    ------
    InterventionState
        After each iteration (live state: read it before advancing the iterator).
    """
    X, y, k = check_embedding(X, y, n_classes)
    if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if renormalise not in RENORMALISE:
        raise ValueError(f"renormalise must be one of {RENORMALISE}, got {renormalise!r}")
    rng = np.random.default_rng(rng)
    d = X.shape[1]
    tf = ClassTransforms.identity(k, d)
    masks = [np.flatnonzero(y == c) for c in range(k)]
    raw = [X[m].copy() for m in masks]  # class c's points are a[c] * raw[c] + b[c]
    a = np.ones(k)
    b = np.zeros((k, d))
    S = np.zeros((k, d))  # accumulated shift share of T ("shifts" mode)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    centres, std, present = _stats(X, y, k)
    sq = np.array([float(np.sum(r**2)) for r in raw])  # Σ‖x‖² per class
    target = float(np.sum(sq))  # N × mean squared norm of the original embedding
    shifting = renormalise != "off" and ("s" in params.types or "os" in params.types)
    for it in range(1, int(iterations) + 1):
        c = _choose(
            cluster_logits(centres, std, present, params.criterion), params.probabilistic, rng
        )
        Xc = a[c] * raw[c] + b[c]
        R_i, T_i, v = _step(Xc, c, centres, present, params)
        tf.compose(c, R_i, T_i)
        S[c] = R_i @ S[c] + v
        raw[c] = Xc = Xc @ R_i.T + T_i
        a[c], b[c] = 1.0, 0.0
        centres[c] = Xc.mean(axis=0)
        std[c] = _pooled_std(Xc)
        sq[c] = float(np.sum(Xc**2))
        changed = np.zeros(k, dtype=bool)
        changed[c] = True
        s = 1.0
        if shifting and renormalise == "scale":
            total = float(np.sum(sq))
            s = float(np.sqrt(target / total)) if total > 0 else 1.0
            if s != 1.0:
                tf.R *= s
                tf.T *= s
                a *= s
                b *= s
                centres *= s
                std *= s
                sq *= s * s
                changed[:] = present
        elif shifting and np.any(S):
            # Y = embedding without the shifts' share: Σ‖Y‖² and class sums of Y from stats
            sums = counts[:, None] * centres
            aa = float(np.sum(counts * np.sum(S**2, axis=1)))
            bb = float(np.sum(S * sums)) - aa
            yy = float(np.sum(sq)) - 2.0 * float(np.sum(S * sums)) + aa
            s = _shift_factor(aa, bb, yy - target)
            if s != 1.0:
                delta = (s - 1.0) * S
                tf.T += delta
                b += delta
                centres += delta
                sq += 2.0 * np.sum(delta * sums, axis=1) + counts * np.sum(delta**2, axis=1)
                S *= s
                changed |= np.any(delta != 0, axis=1)
        yield InterventionState(it, c, tf, changed, s, raw, a, b, masks)


def compute_interventions(
    X: np.ndarray,
    y: np.ndarray,
    params: InterventionParams,
    iterations: int,
    *,
    rng: np.random.Generator | int | None = None,
    n_classes: int | None = None,
    renormalise: str = "scale",
) -> ClassTransforms:
    """Compose ``iterations`` ALI steps into one affine map per class.

    Before each choice the accumulated maps are applied, so every step sees the
    currently intervened embedding.

    Norm renormalisation ("normalize the shift vectors for all clusters after each
    iteration such that the norm of the original and transformed embedding remain
    equal"): after every iteration of a setting that shifts ("s" or "os"), the maps of all
    classes are multiplied by one factor ρ so that the root-mean-square point norm of the
    transformed embedding equals the original's exactly (``renormalise="scale"``, the
    default). Scaling R_c and T_c together is an isotropic scaling about the origin: it
    keeps every ratio of distances, so the shifts keep their size relative to the spreads.
    Scaling the translations alone (``"shifts"``, :func:`renormalise_shifts`) is the
    literal alternative; on an L2-normalised embedding it cancels every outward shift.
    Settings without shifts are not renormalised (contraction then lowers the norm).

    Parameters
    ----------
    X : ndarray, shape (N, d)
        The embedding (e.g. of the whole training set after an epoch).
    y : ndarray, shape (N,)
        Class codes 0..K-1.
    params : InterventionParams
    iterations : int
        Number of steps n (>= 0).
    rng : numpy Generator, int or None
        Seed or generator for the probabilistic criterion.
    n_classes : int, optional
        K when some classes have no sample in ``y`` (their maps are only scaled by the
        renormalisation).
    renormalise : str
        "scale" (default), "shifts" or "off".

    Returns
    -------
    ClassTransforms
        θ_c for every class; ``.apply(X, y)`` gives the loss targets.

    Raises
    ------
    ValueError
        Bad embeddings or labels (one line, see :func:`check_embedding`).
    """
    X, y, k = check_embedding(X, y, n_classes)
    tf = ClassTransforms.identity(k, X.shape[1])
    for state in iter_interventions(
        X, y, params, iterations, rng=rng, n_classes=k, renormalise=renormalise
    ):
        tf = state.transforms
    return ClassTransforms(tf.R.copy(), tf.T.copy())


# --------------------------------------------------------------------------- loss


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequency w_c = N / (|M| N_c) (paper 2 §III-E).

    |M| counts the classes present in ``y``, so the mean weight over the samples is 1;
    classes absent from ``y`` get weight 0.

    Parameters
    ----------
    y : array_like, shape (N,)
        Class codes 0..n_classes-1.
    n_classes : int
        K.

    Returns
    -------
    ndarray, shape (K,)
        Weights (float64).
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be a non-empty 1-D integer array, got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = y.size / (np.count_nonzero(present) * counts[present])
    return w


def intervention_loss(
    emb: torch.Tensor,
    target: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """ALI loss term (1/|B|) Σ_i w_{y_i} ‖emb_i - target_i‖₁ (eq. 1 without α).

    Parameters
    ----------
    emb : Tensor, shape (B, d)
        The network's embeddings (gradients flow through these).
    target : Tensor, shape (B, d)
        Intervened embeddings θ_{y_i}(x_i); treated as constants (detached).
    y : Tensor, shape (B,)
        Class codes (indexes ``weights``).
    weights : Tensor, shape (K,), optional
        Class weights (:func:`class_weights`); None weighs every sample 1.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    if emb.shape != target.shape or emb.ndim != 2 or y.shape != emb.shape[:1]:
        raise ValueError(
            f"emb and target must be (B, d) and y (B,), got {tuple(emb.shape)}, "
            f"{tuple(target.shape)} and {tuple(y.shape)}"
        )
    per = (emb - target.detach().to(emb.dtype)).abs().sum(dim=1)
    if weights is not None:
        per = per * weights.to(device=emb.device, dtype=emb.dtype)[y.long()]
    return per.mean()
