"""Embedding training with the triplet loss and automatic latent interventions (paper 2).

Three losses (paper 2, eqs. 1 and 5):

* ``"tml"``: triplet margin loss only (the baseline);
* ``"ali"``: ``(1 - α)·TML + α·mean_i w_{y_i}·‖x_i − x'_i‖₁`` in the n-d embedding
  (α = 0.8), with ``x'_i = θ_{y_i}(x_i)`` the intervened embedding;
* ``"pali"``: the same in 2-D, ``‖PTSNE(x_i) − x'_i‖₁`` (α = 0.9), with interventions
  computed on the parametric t-SNE map of the training embeddings.

**Per epoch** (paper: "Interventions are recomputed and applied at the beginning of every
epoch"): embed the training cells (eval mode, no augmentation); ALI: compute the class
transforms θ on that embedding and fix the targets ``x'_i = θ_{y_i}(x_i)`` for the whole
epoch (the "transformed embedding ... employed to determine the loss for the next training
epoch" of Fig. 3); PALI: fit a parametric t-SNE (seeded by seed and epoch) on the
training embedding (the first epoch fits it; later epochs refresh it, starting from the
previous map's weights), intervene on its 2-D map, and fix the 2-D targets. During the network
steps the PTSNE map is **frozen** (no gradient into its weights, eval mode): the targets
are coordinates of that map, and letting the map move would let the loss be met by
bending the map instead of the embedding. The loss still back-propagates *through* the map
into the network.

**Manual PLI targets** (``pli_targets``: per-row 2-D targets and a mask, e.g. from a
:class:`~hemalens.engine.embed.pli.PLISession`) join the 2-D term: for ``"pali"`` they
replace the automatic targets of the masked training cells; for ``"tml"`` they make the
PLI baseline (TML plus the 2-D term on the masked cells only, α = 0.9). The session's map
is not this epoch's PTSNE map, so the session coordinates are carried into the PTSNE map by
the least-squares affine map fitted on the *unmoved* training cells of the session
(at least 3 needed); masked cells outside the training split are ignored.

**Evaluation**: every ``svm_every`` epochs (and at the last) an RBF-SVM is fitted on the
training embeddings (classes with a single training cell left out: the grid search cannot
cross-validate them) and scored by macro-F1 on the validation fold; early stopping keeps the
weights of the best such epoch and stops after ``patience`` epochs without a better score.
The test fold is scored once, with the best epoch's weights and SVM.

Reproducible on the CPU: the seed fixes initialisation, batch order, augmentation,
dropout, interventions, PTSNE and SVM folds; the caller's global torch RNG is restored.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from hemalens.engine.embed.augment import crop_offset, random_view
from hemalens.engine.embed.folds import region_folds
from hemalens.engine.embed.interventions import (
    InterventionParams,
    class_weights,
    compute_interventions,
    intervention_loss,
)
from hemalens.engine.embed.network import EmbeddingNet, EmbeddingSpec, build_embedding_net
from hemalens.engine.embed.svm import fit_svm, macro_f1
from hemalens.engine.embed.triplet import MINING, TripletLoss
from hemalens.engine.jobs import CancelOnly, Progress, SubProgress, checkpoint, report
from hemalens.engine.models.weights import state_to_arrays
from hemalens.engine.train.loop import resolve_device, seeded_deterministic

__all__ = [
    "DEFAULT_ALPHA",
    "LOSSES",
    "TABLE_I",
    "TYPES",
    "EmbedTrainConfig",
    "FoldResult",
    "align_2d",
    "combined_loss",
    "default_params",
    "train_embedding",
    "train_fold",
]

LOSSES = ("tml", "ali", "pali")
#: Intervention types in the order the paper composes them (contract, shift, ortho, rotate).
TYPES = ("c", "s", "os", "r")
#: Paper 2 §III-F: α = 0.8 for ALI (n-D) and 0.9 for PALI (2-D); TML alone has no term.
DEFAULT_ALPHA = {"tml": 0.0, "ali": 0.8, "pali": 0.9}
#: Paper 2 Table I (λ_c = 0.5 throughout): per type combination the ``"2d"`` (PALI) and
#: ``"nd"`` (ALI) strengths, neighbour count n and iterations i. ``gamma`` only matters
#: with the ortho-shift; without it γ = 1 (the plain shift direction).
TABLE_I: dict[tuple[str, ...], dict[str, dict[str, float]]] = {
    ("c",): {
        "2d": {"neighbours": 15, "iterations": 48},
        "nd": {"neighbours": 15, "iterations": 33},
    },
    ("c", "s"): {
        "2d": {"lambda_s": 1.0, "neighbours": 11, "iterations": 48},
        "nd": {"lambda_s": 4.0, "neighbours": 2, "iterations": 25},
    },
    ("c", "r"): {
        "2d": {"lambda_r": 0.16, "neighbours": 11, "iterations": 47},
        "nd": {"lambda_r": 0.32, "neighbours": 11, "iterations": 15},
    },
    ("c", "s", "os"): {
        "2d": {"lambda_s": 2.0, "gamma": 0.75, "neighbours": 14, "iterations": 46},
        "nd": {"lambda_s": 4.0, "gamma": 0.5, "neighbours": 2, "iterations": 25},
    },
    ("c", "s", "r"): {
        "2d": {"lambda_r": 0.02, "lambda_s": 1.0, "neighbours": 15, "iterations": 45},
        "nd": {"lambda_r": 0.32, "lambda_s": 0.25, "neighbours": 15, "iterations": 15},
    },
    ("c", "s", "os", "r"): {
        "2d": {"lambda_r": 0.02, "lambda_s": 1.0, "gamma": 0.25, "neighbours": 15,
               "iterations": 43},
        "nd": {"lambda_r": 0.32, "lambda_s": 1.0, "gamma": 0.75, "neighbours": 15,
               "iterations": 15},
    },
}
#: Paper 2 §IV-A: the best criterion is mean-std × mean-all in n-D, mean-std in 2-D.
_CRITERION = {"nd": "mean-std*mean-all", "2d": "mean-std"}
_FALLBACK_ITERATIONS = 15
_EMBED_BATCH = 256


def _canonical_types(types: Any) -> tuple[str, ...]:
    if isinstance(types, str):
        types = tuple(t for t in types.replace("+", ",").split(",") if t.strip())
    ts = tuple(str(t).strip() for t in types)
    bad = sorted(set(ts) - set(TYPES))
    if bad or not ts:
        raise ValueError(f"intervention types must be a non-empty subset of {TYPES}, got {ts}")
    return tuple(t for t in TYPES if t in ts)


def default_params(types: Any, space: str) -> tuple[InterventionParams, int]:
    """Paper 2 Table I parameters and iteration count for a combination of types.

    Parameters
    ----------
    types : sequence of str
        Subset of ``("c", "s", "os", "r")`` (any order).
    space : {"nd", "2d"}
        ALI in the n-d embedding or PALI on the 2-D map.

    Returns
    -------
    (InterventionParams, int)
        The strengths, neighbour count and criterion (deterministic), and the iterations
        per epoch. Combinations Table I lacks get the :class:`InterventionParams`
        defaults with 15 neighbours and 15 iterations.
    """
    if space not in _CRITERION:
        raise ValueError(f"space must be 'nd' or '2d', got {space!r}")
    ts = _canonical_types(types)
    row = dict(TABLE_I.get(ts, {}).get(space, {"neighbours": 15,
                                                 "iterations": _FALLBACK_ITERATIONS}))
    iterations = int(row.pop("iterations"))
    row["neighbours"] = int(row["neighbours"])
    if "os" not in ts:
        row.setdefault("gamma", 1.0)
    params = InterventionParams(
        types=ts, lambda_c=0.5, criterion=_CRITERION[space], probabilistic=False, **row
    )
    return params, iterations


@dataclass(frozen=True)
class EmbedTrainConfig:
    """How to train an embedding network.

    Attributes
    ----------
    loss : {"tml", "ali", "pali"}
        Triplet loss only, TML + ALI (n-D), or TML + PALI (2-D).
    types : tuple of str
        Intervention types (subset of ``c, s, os, r``), for ALI/PALI.
    alpha : float or None
        Weight of the intervention term; None -> 0.8 (ALI), 0.9 (PALI, and a PLI term
        with TML). TML without PLI targets has no such term (α = 0 whatever is given).
    class_weights : bool
        Weigh the intervention term by w_c = N / (|M|·N_c) of the training fold.
    params : InterventionParams or None
        Intervention strengths; None -> Table I (nD column for ALI, 2D for PALI).
    iterations : int or None
        Intervention iterations per epoch; None -> Table I ``i``.
    epochs, batch_size, lr : int, int, float
        Adam optimisation.
    patience : int
        Stop after this many epochs without a better validation macro-F1.
    svm_every : int
        Refit and score the SVM every this many epochs (and at the last epoch).
    seed : int
        Seed of everything random.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:i]"``.
    spec : EmbeddingSpec
        Backbone, embedding length, input size, dropout.
    margin : float
        Triplet margin (on L2-normalised embeddings).
    mining : str
        Triplet mining (see :mod:`hemalens.engine.embed.triplet`).
    augment : bool
        Random rotation, mirror and crop offset of training batches.
    ptsne_epochs : int or None
        Epochs of the first parametric t-SNE fit (None: its default).
    ptsne_refresh_epochs : int
        Epochs of each later per-epoch refresh, which starts from the previous map's
        weights (without early exaggeration), so the map changes smoothly between epochs.
    svm_cv : int
        Cross-validation folds of the SVM grid search.
    ali_target : {"epoch", "batch"}
        What ``x'_i = θ_{y_i}(x_i)`` of eq. 1 is applied to (n-D ALI): ``"epoch"`` (the
        default) fixes the targets at the start of each epoch from the embeddings of the
        un-augmented cells; ``"batch"`` applies that epoch's θ to the current (augmented)
        batch embeddings, detached, so the L1 term is the intervention displacement
        alone (issue 13 compares both readings of the paper).
    """

    loss: str = "ali"
    types: tuple[str, ...] = ("c", "s")
    alpha: float | None = None
    class_weights: bool = False
    params: InterventionParams | None = None
    iterations: int | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 10
    svm_every: int = 5
    seed: int = 0
    device: str = "auto"
    spec: EmbeddingSpec = field(default_factory=EmbeddingSpec)
    margin: float = 0.05
    mining: str = "all"
    augment: bool = True
    ptsne_epochs: int | None = None
    ptsne_refresh_epochs: int = 30
    svm_cv: int = 3
    ali_target: str = "epoch"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES}")
        object.__setattr__(self, "types", _canonical_types(self.types))
        if isinstance(self.spec, dict):
            object.__setattr__(self, "spec", EmbeddingSpec.from_dict(self.spec))
        checks = [
            (self.alpha is None or 0.0 <= float(self.alpha) <= 1.0,
             f"alpha must be within [0, 1], got {self.alpha}"),
            (self.iterations is None or int(self.iterations) >= 1,
             f"iterations must be >= 1, got {self.iterations}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 3, f"batch_size must be >= 3 (triplets), got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.svm_every >= 1, f"svm_every must be >= 1, got {self.svm_every}"),
            (self.svm_cv >= 2, f"svm_cv must be >= 2, got {self.svm_cv}"),
            (self.mining in MINING, f"unknown mining {self.mining!r}; choose one of {MINING}"),
            (self.margin >= 0, f"margin must be >= 0, got {self.margin}"),
            (self.ptsne_epochs is None or self.ptsne_epochs >= 1,
             f"ptsne_epochs must be >= 1, got {self.ptsne_epochs}"),
            (self.ali_target in ("epoch", "batch"),
             f"ali_target must be 'epoch' or 'batch', got {self.ali_target!r}"),
            (self.ptsne_refresh_epochs >= 1,
             f"ptsne_refresh_epochs must be >= 1, got {self.ptsne_refresh_epochs}"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)

    @property
    def space(self) -> str:
        """``"2d"`` for PALI, else ``"nd"``."""
        return "2d" if self.loss == "pali" else "nd"

    def resolved_alpha(self, *, pli: bool = False) -> float:
        """Return the α in use: the given one, else the paper's default for the loss.

        Parameters
        ----------
        pli : bool
            Manual PLI targets are given (TML then gets a 2-D term with α = 0.9).

        Returns
        -------
        float
            Weight of the intervention term.
        """
        if self.loss == "tml" and not pli:
            return 0.0  # no intervention term to weigh
        if self.alpha is not None:
            return float(self.alpha)
        return DEFAULT_ALPHA["pali" if self.loss == "tml" else self.loss]

    def resolved_params(self) -> tuple[InterventionParams, int]:
        """Intervention parameters and iterations per epoch (Table I where not given)."""
        params, iterations = default_params(self.types, self.space)
        if self.params is not None:
            params = self.params
        if self.iterations is not None:
            iterations = int(self.iterations)
        return params, iterations

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict (defaults resolved)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("params", "spec")}
        d["types"] = list(self.types)
        d["spec"] = self.spec.to_dict()
        if self.loss != "tml":
            params, iterations = self.resolved_params()
            d["params"] = params.to_dict()
            d["iterations"] = iterations
        else:
            d["params"] = None
        return d


@dataclass
class FoldResult:
    """Outcome of :func:`train_fold`.

    Attributes
    ----------
    state : dict of str to numpy.ndarray
        Weights of the best epoch (``state_dict`` as arrays).
    spec : EmbeddingSpec
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``tml``, ``intervention`` (batch means),
        ``triplets`` (mean mined per batch), ``val_f1`` (None when not scored),
        ``seconds`` (whole epoch), ``embed_seconds`` (epoch-start embedding),
        ``intervention_seconds`` (``compute_interventions``), ``ptsne_seconds``
        (parametric t-SNE fit + map), ``train_seconds`` (network steps), ``svm_seconds``.
    best_epoch : int
        1-based epoch whose weights were kept.
    val_f1, test_f1 : float
        Macro-F1 of the best epoch's SVM on validation and test (NaN without test cells).
    svm_params : dict
        The grid-search choice of that SVM.
    embedding : numpy.ndarray
        ``(N, dim)`` float32 embeddings of every input row with the kept weights.
    seconds : float
        Wall time of the fold.
    device : str
        Where it trained.
    """

    state: dict[str, np.ndarray]
    spec: EmbeddingSpec
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    val_f1: float = float("nan")
    test_f1: float = float("nan")
    svm_params: dict = field(default_factory=dict)
    embedding: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    seconds: float = 0.0
    device: str = "cpu"

    def network(self) -> EmbeddingNet:
        """Rebuild the kept network (CPU, eval mode)."""
        net = EmbeddingNet(self.spec)
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state.items()})
        return net.eval()


def combined_loss(
    tml: torch.Tensor | float,
    out: torch.Tensor | None,
    target: torch.Tensor | None,
    y: torch.Tensor | None,
    weights: torch.Tensor | None,
    alpha: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper 2 eqs. 1 / 5: ``(1 - α)·TML + α·mean_i w_{y_i}‖out_i − target_i‖₁``.

    Parameters
    ----------
    tml : torch.Tensor or float
        The batch's triplet loss.
    out, target : torch.Tensor or None
        ``(B, d)`` embeddings (or their 2-D map) and their fixed targets; None (or B = 0):
        no intervention term.
    y : torch.Tensor or None
        ``(B,)`` classes of the rows.
    weights : torch.Tensor or None
        ``(K,)`` class weights, or None for 1.
    alpha : float
        Weight of the intervention term.
    mask : torch.Tensor, optional
        ``(B,)`` bool: only these rows have targets (manual PLI); the mean runs over them
        (:func:`~hemalens.engine.embed.pli.pli_loss`).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The total loss and the (unweighted-by-α) intervention term.
    """
    if out is None or target is None or out.shape[0] == 0:
        term = torch.zeros((), dtype=torch.float32)
        if isinstance(tml, torch.Tensor):
            term = term.to(tml.device)
    elif y is None:
        raise ValueError("the intervention term needs the classes y of the rows")
    elif mask is not None:
        from hemalens.engine.embed.pli import pli_loss

        w = None if weights is None else weights.to(out)[y.long()]
        term = pli_loss(out, target, mask, w)
    else:
        term = intervention_loss(out, target, y, weights)
    return (1.0 - alpha) * tml + alpha * term, term


def align_2d(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares affine map from ``source`` to ``target`` points (both ``(M, 2)``).

    Parameters
    ----------
    source, target : numpy.ndarray
        Corresponding points, M >= 3 and not collinear.

    Returns
    -------
    numpy.ndarray
        ``(3, 2)`` matrix A with ``[source, 1] @ A ≈ target``.

    Raises
    ------
    ValueError
        Fewer than 3 points or a degenerate (collinear) set.
    """
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 3:
        raise ValueError(
            f"aligning PLI targets needs >= 3 unmoved training cells, got {src.shape[0]}"
        )
    h = np.c_[src, np.ones(len(src))]
    a, _, rank, _ = np.linalg.lstsq(h, dst, rcond=None)
    if rank < 3:
        raise ValueError("the unmoved PLI cells are collinear; cannot align the maps")
    return a


def _check_inputs(
    patches: Any, labels: Any, pli_targets: Any
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    x = np.asarray(patches)
    y = np.asarray(labels)
    rgb = x.ndim == 4 and x.shape[-1] == 3 and x.dtype == np.uint8
    grey = x.ndim == 3 and x.dtype.kind == "f"
    if not (rgb or grey or (x.ndim == 4 and x.shape[-1] == 3 and x.dtype.kind == "f")):
        raise ValueError(
            f"patches must be (N, S, S, 3) uint8 or (N, S, S) float, got {x.shape} {x.dtype}"
        )
    if x.shape[0] == 0:
        raise ValueError("no cells to train on (empty input)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError("patches contain NaN or infinite values; QC should have rejected them")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be ({x.shape[0]},) integer codes, got {y.shape} {y.dtype}")
    if y.min() < 0:
        raise ValueError("labels must be class codes >= 0 (unlabelled cells cannot train)")
    if np.unique(y).size < 2:
        raise ValueError("all cells have the same class; training needs at least two classes")
    pli = None
    if pli_targets is not None:
        t, m = (np.asarray(a) for a in pli_targets)
        if t.shape != (x.shape[0], 2) or m.shape != (x.shape[0],) or m.dtype != bool:
            raise ValueError(
                f"pli_targets must be ((N, 2) float, (N,) bool) for N={x.shape[0]} rows, got "
                f"{t.shape} and {m.shape} {m.dtype}"
            )
        if not np.isfinite(t[m]).all():
            raise ValueError("pli_targets has non-finite targets for masked cells")
        pli = (t.astype(np.float64), m)
    return x, y.astype(np.int64), pli


def _split_arrays(split: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = []
    for key in ("train", "val", "test"):
        v = split[key] if isinstance(split, dict) else getattr(split, key)
        a = np.asarray(v, np.int64).reshape(-1)
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"split {key!r} has row indices outside 0..{n - 1}")
        parts.append(a)
    if parts[0].size < 3 or parts[1].size == 0:
        raise ValueError(
            f"the split needs >= 3 training and >= 1 validation cells, got "
            f"{parts[0].size} and {parts[1].size}"
        )
    return parts[0], parts[1], parts[2]


def train_fold(
    patches: np.ndarray,
    labels: np.ndarray,
    split: Any,
    cfg: EmbedTrainConfig,
    *,
    pli_targets: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> FoldResult:
    """Train one cross-validation fold.

    Parameters
    ----------
    patches : numpy.ndarray
        ``(N, S, S, 3)`` uint8 RGB or ``(N, S, S)`` float grey patches.
    labels : numpy.ndarray
        ``(N,)`` class codes ``0..K-1``.
    split : FoldSplit or dict
        ``train``, ``val``, ``test`` row indices (``region_folds`` output).
    cfg : EmbedTrainConfig
        Loss, interventions, optimisation, network.
    pli_targets : (numpy.ndarray, numpy.ndarray), optional
        Per-row 2-D targets ``(N, 2)`` and mask ``(N,)`` of manually moved cells (rows not
        in the session: any value, mask False). Only with loss ``"pali"`` or ``"tml"``.
    progress : Progress, optional
        ``set_progress(epoch, epochs)``; cancellation is checked before every batch and
        raises :class:`~hemalens.engine.jobs.Cancelled`.

    Returns
    -------
    FoldResult
        Weights of the best validation epoch, the history, the scores and the embedding of
        every row.

    Raises
    ------
    ValueError
        Bad patches, labels, split or PLI targets, one class only, or an unknown device.
    """
    t_start = time.perf_counter()
    x_np, y_np, pli = _check_inputs(patches, labels, pli_targets)
    train, val, test = _split_arrays(split, y_np.size)
    if np.unique(y_np[train]).size < 2:
        raise ValueError("the training fold holds a single class; training needs two")
    if pli is not None and cfg.loss == "ali":
        raise ValueError("manual PLI targets are 2-D: use loss 'pali' or 'tml' with them")
    dev = resolve_device(cfg.device)
    if progress is not None:
        progress.set_status(f"Training {cfg.loss} on {train.size} cells ({dev})")
        progress.set_progress(0, cfg.epochs)
    with seeded_deterministic(cfg.seed, dev):
        result = _Fold(x_np, y_np, train, val, test, cfg, pli, dev, progress).run()
    result.seconds = time.perf_counter() - t_start
    return result


class _FoldProgress(SubProgress):
    """A fold's share of the job's progress; its reports carry the fold index."""

    fold = 0

    def report(self, record: dict) -> None:  # noqa: D102
        super().report({"fold": self.fold, **record})


class _Fold:
    """State of one fold's training (kept in one place to keep :func:`train_fold` short)."""

    def __init__(self, x_np, y_np, train, val, test, cfg, pli, dev, progress) -> None:
        self.x_np, self.y_np = x_np, y_np
        self.train, self.val, self.test = train, val, test
        self.cfg, self.pli, self.dev, self.progress = cfg, pli, dev, progress
        self.alpha = cfg.resolved_alpha(pli=pli is not None)
        self.use_2d = self.alpha > 0 and (cfg.loss == "pali" or pli is not None)
        self.use_nd = self.alpha > 0 and cfg.loss == "ali"
        if self.use_nd or (self.use_2d and cfg.loss == "pali"):
            self.params, self.iterations = cfg.resolved_params()
        self.rng = np.random.default_rng(cfg.seed)
        self.net = build_embedding_net(cfg.spec).to(dev)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.tml = TripletLoss(cfg.margin, cfg.mining)
        self.x = torch.from_numpy(np.ascontiguousarray(x_np)).to(dev)
        self.y = torch.from_numpy(y_np).to(dev)
        self.k = k = int(y_np.max()) + 1
        self.weights = (
            torch.as_tensor(class_weights(y_np[train], k), dtype=torch.float32, device=dev)
            if cfg.class_weights else None
        )
        self.offset = crop_offset(cfg.spec.input_size)
        self.ptsne: Any = None

    # -- pieces -------------------------------------------------------------------------
    def intervene(self, emb: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        """Return θ_{y_i}(x_i) for the rows; classes with one training cell keep x_i."""
        x = emb.astype(np.float64)
        ok = np.bincount(y, minlength=self.k)[y] >= 2
        tgt = x.copy()
        self.theta = None
        if np.unique(y[ok]).size >= 2:
            theta = compute_interventions(
                x[ok], y[ok], self.params, self.iterations, rng=seed, n_classes=self.k
            )
            tgt[ok] = theta.apply(x[ok], y[ok])
            self.theta, self.theta_ok = theta, np.bincount(y, minlength=self.k) >= 2
        return tgt

    def refresh_ptsne(self, emb: np.ndarray, seed: int) -> Any:
        """Fit the map on the first epoch, then continue from its weights (warm refresh)."""
        from hemalens.engine.embed.ptsne import ParametricTSNE  # only PALI/PLI need it

        # one batch of all training cells: P is computed once per fit, not once per epoch
        kw: dict[str, Any] = {"batch_size": max(4, min(emb.shape[0], 4096)), "seed": seed,
                              "device": str(self.dev)}
        if self.ptsne is None:
            if self.cfg.ptsne_epochs is not None:
                kw["epochs"] = self.cfg.ptsne_epochs
            new = ParametricTSNE(emb.shape[1], **kw)
        else:
            kw.update(epochs=self.cfg.ptsne_refresh_epochs, exaggeration_epochs=0)
            new = ParametricTSNE(emb.shape[1], **kw)
            new.module.load_state_dict(self.ptsne.module.state_dict())
        self.ptsne = new.fit(emb, progress=CancelOnly(self.progress))
        return self.ptsne

    def embed(self, rows: np.ndarray) -> np.ndarray:
        return self.net.embed(self.x_np[rows], _EMBED_BATCH, progress=self.progress)

    def targets(self, emb: np.ndarray, epoch: int, rec: dict) -> tuple[Any, Any, Any]:
        """Return the fixed targets of the training rows for this epoch: (targets, mask, map)."""
        y_tr = self.y_np[self.train]
        seed = self.cfg.seed * 100_003 + epoch
        if self.use_nd:
            t0 = time.perf_counter()
            tgt = self.intervene(emb, y_tr, seed)
            rec["intervention_seconds"] = time.perf_counter() - t0
            return torch.as_tensor(tgt, dtype=torch.float32, device=self.dev), None, None
        t0 = time.perf_counter()
        ptsne = self.refresh_ptsne(emb, seed)
        y2 = np.asarray(ptsne.transform(emb), np.float64)
        rec["ptsne_seconds"] = time.perf_counter() - t0
        mask = None
        if self.cfg.loss == "pali":
            t0 = time.perf_counter()
            tgt = self.intervene(y2, y_tr, seed)
            rec["intervention_seconds"] = time.perf_counter() - t0
        else:
            tgt = y2.copy()
        if self.pli is not None:
            p_t, p_m = self.pli[0][self.train], self.pli[1][self.train]
            anchor = ~p_m & np.isfinite(p_t).all(axis=1)
            a = align_2d(p_t[anchor], y2[anchor])
            tgt[p_m] = np.c_[p_t[p_m], np.ones(int(p_m.sum()))] @ a
            if self.cfg.loss == "tml":
                mask = torch.from_numpy(p_m).to(self.dev)
        module = ptsne.module.to(self.dev).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return torch.as_tensor(tgt, dtype=torch.float32, device=self.dev), mask, module

    def train_epoch(self, tgt, mask, module, rec: dict) -> None:
        t0 = time.perf_counter()
        self.net.train()
        n = self.train.size
        order = self.rng.permutation(n)
        # nearly equal batches: never a trailing batch of one (no triplet, BatchNorm issues)
        batches = np.array_split(order, max(1, math.ceil(n / self.cfg.batch_size)))
        sums = {"loss": 0.0, "tml": 0.0, "intervention": 0.0, "triplets": 0.0}
        for b in batches:
            checkpoint(self.progress)
            rows = torch.from_numpy(self.train[b]).to(self.dev)
            xb = self.net.preprocess(self.x[rows])
            if self.cfg.augment:
                xb = random_view(xb, self.rng, max_offset=self.offset)
            emb = self.net(xb)
            yb = self.y[rows]
            l_tml = self.tml(emb, yb) if self.alpha < 1 else torch.zeros((), device=self.dev)
            out = t = keep = None
            if tgt is not None:
                sel = torch.from_numpy(b).to(self.dev)
                out, t = emb, tgt[sel]
                theta = getattr(self, "theta", None)
                if self.use_nd and self.cfg.ali_target == "batch" and theta is not None:
                    # x'_i = θ(x_i) on the current batch embedding (detached)
                    x_np = emb.detach().cpu().numpy().astype(np.float64)
                    y_np = yb.cpu().numpy()
                    cur = x_np.copy()
                    ok = self.theta_ok[y_np]
                    if ok.any():
                        cur[ok] = theta.apply(x_np[ok], y_np[ok])
                    t = torch.as_tensor(cur, dtype=emb.dtype, device=self.dev)
                if module is not None:
                    out = module(emb)
                if mask is not None:
                    keep = mask[sel]
            loss, term = combined_loss(l_tml, out, t, yb, self.weights, self.alpha, keep)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            sums["loss"] += float(loss.detach())
            sums["tml"] += float(l_tml.detach())
            sums["intervention"] += float(term.detach())
            sums["triplets"] += self.tml.last_triplets if self.alpha < 1 else 0
        rec.update({k: v / len(batches) for k, v in sums.items()})
        rec["train_seconds"] = time.perf_counter() - t0

    def score(self, rec: dict) -> tuple[float, Any, np.ndarray]:
        t0 = time.perf_counter()
        e_tr, e_va = self.embed(self.train), self.embed(self.val)
        y_tr = self.y_np[self.train]
        # a class with one training cell cannot be cross-validated: the SVM leaves it out
        ok = np.bincount(y_tr)[y_tr] >= 2
        svm = fit_svm(e_tr[ok].astype(np.float64), y_tr[ok], cv=self.cfg.svm_cv,
                      seed=self.cfg.seed)
        f1 = float(macro_f1(self.y_np[self.val], svm.predict(e_va.astype(np.float64))))
        rec["svm_seconds"] = time.perf_counter() - t0
        return f1, svm, e_tr

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> FoldResult:
        cfg = self.cfg
        history: list[dict] = []
        best_f1, best_epoch, best_state, best_svm = -1.0, 0, None, None
        e_train: np.ndarray | None = None  # training embedding at the current weights
        for epoch in range(1, cfg.epochs + 1):
            checkpoint(self.progress)
            t0 = time.perf_counter()
            rec: dict[str, Any] = {
                "epoch": epoch, "val_f1": None, "embed_seconds": 0.0,
                "intervention_seconds": 0.0, "ptsne_seconds": 0.0, "svm_seconds": 0.0,
            }
            tgt = mask = module = None
            if self.use_nd or self.use_2d:
                if e_train is None:
                    t1 = time.perf_counter()
                    e_train = self.embed(self.train)
                    rec["embed_seconds"] = time.perf_counter() - t1
                tgt, mask, module = self.targets(e_train, epoch, rec)
            e_train = None
            self.train_epoch(tgt, mask, module, rec)
            if epoch % cfg.svm_every == 0 or epoch == cfg.epochs:
                f1, svm, e_train = self.score(rec)
                rec["val_f1"] = f1
                if f1 > best_f1:
                    best_f1, best_epoch, best_svm = f1, epoch, svm
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            rec["seconds"] = time.perf_counter() - t0
            history.append(rec)
            report(self.progress, {"kind": "embed_epoch", **rec})  # live curves in the GUI
            if self.progress is not None:
                self.progress.set_progress(epoch, cfg.epochs)
                if rec["val_f1"] is not None:
                    self.progress.set_status(
                        f"Epoch {epoch}/{cfg.epochs}: validation macro-F1 {rec['val_f1']:.3f}"
                    )
            if best_epoch and epoch - best_epoch >= cfg.patience:
                break
        assert best_state is not None and best_svm is not None  # the last epoch is scored
        self.net.load_state_dict(best_state)
        emb = self.net.embed(self.x_np, _EMBED_BATCH, progress=self.progress)
        test_f1 = (
            float(macro_f1(self.y_np[self.test], best_svm.predict(emb[self.test].astype(
                np.float64))))
            if self.test.size else float("nan")
        )
        self.net = self.net.to("cpu").eval()
        return FoldResult(
            state=state_to_arrays(self.net),
            spec=cfg.spec,
            history=history,
            best_epoch=best_epoch,
            val_f1=best_f1,
            test_f1=test_f1,
            svm_params=dict(getattr(best_svm, "params", {}) or {}),
            embedding=emb,
            device=str(self.dev),
        )


def train_embedding(
    patches: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    cfg: EmbedTrainConfig,
    *,
    folds: int = 3,
    pli_targets: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """k-fold cross-validated embedding training (paper 2 Table II).

    Folds come from :func:`~hemalens.engine.embed.folds.region_folds`: regions never
    straddle folds; fold i tests on fold i, validates on fold i+1, trains on the rest.

    Parameters
    ----------
    patches, labels : numpy.ndarray
        As for :func:`train_fold`.
    groups : numpy.ndarray
        ``(N,)`` region of each row.
    cfg : EmbedTrainConfig
        The training setup (its seed also seeds the folds).
    folds : int
        Number of folds k (>= 3).
    pli_targets : (numpy.ndarray, numpy.ndarray), optional
        Manual 2-D targets and mask per row (see :func:`train_fold`).
    progress : Progress, optional
        Progress over all folds; cancellation raises ``Cancelled``.

    Returns
    -------
    dict
        JSON-ready: ``loss``, ``types``, ``alpha``, ``class_weights``, ``config``,
        ``folds`` (per fold: ``fold``, ``test_f1``, ``val_f1``, ``epochs``, ``best_epoch``,
        ``svm``, ``seconds``, ``intervention_fraction``), ``mean_f1``, ``std_f1``
        (population std of the folds' test macro-F1), ``best_fold`` (highest validation
        macro-F1: its network is the final model), ``seconds``; and three entries that are
        not JSON: ``network`` (:class:`EmbeddingNet` of the best fold, CPU, eval mode),
        ``embedding`` (``(N, dim)`` float32, every row embedded by that network — its own
        training rows included) and ``test_fold`` (``(N,)`` int8: the fold testing each
        row); ``history`` (JSON-ready) lists each fold's per-epoch records.

    Raises
    ------
    ValueError
        Bad inputs, fewer regions than folds, one class.
    """
    t0 = time.perf_counter()
    y = np.asarray(labels)
    splits = region_folds(y, np.asarray(groups), folds, seed=cfg.seed)
    results: list[FoldResult] = []
    for i, split in enumerate(splits):
        sub = _FoldProgress(progress, i / len(splits), 1 / len(splits), f"Fold {i + 1}/{folds}")
        sub.fold = i
        results.append(train_fold(patches, y, split, cfg, pli_targets=pli_targets, progress=sub))
    test_fold = np.full(y.size, -1, np.int8)
    for i, split in enumerate(splits):
        test_fold[np.asarray(_split_arrays(split, y.size)[2])] = i
    best = int(np.argmax([r.val_f1 for r in results]))
    f1s = np.array([r.test_f1 for r in results], np.float64)
    rows = []
    for i, r in enumerate(results):
        total = sum(h["seconds"] for h in r.history)
        inter = sum(h["intervention_seconds"] for h in r.history)
        rows.append(
            {
                "fold": i,
                "test_f1": round(r.test_f1, 4),
                "val_f1": round(r.val_f1, 4),
                "epochs": len(r.history),
                "best_epoch": r.best_epoch,
                "svm": r.svm_params,
                "seconds": round(r.seconds, 2),
                "intervention_fraction": round(inter / total, 4) if total else 0.0,
            }
        )
    return {
        "loss": cfg.loss,
        "types": list(cfg.types),
        "alpha": cfg.resolved_alpha(pli=pli_targets is not None),
        "class_weights": cfg.class_weights,
        "config": cfg.to_dict(),
        "folds": rows,
        "mean_f1": round(float(np.nanmean(f1s)), 4),
        "std_f1": round(float(np.nanstd(f1s)), 4),
        "best_fold": best,
        "seconds": round(time.perf_counter() - t0, 2),
        "network": results[best].network(),
        "embedding": results[best].embedding,
        "test_fold": test_fold,
        "history": [r.history for r in results],
    }
