"""One entry point for per-cell explanations: :func:`explain_cells`.

Each method returns one float32 map per cell at the patch resolution (H, W), for a target
class per cell: by default the class the model predicts in eval mode (dropout off), or
any class the caller asks for. LIME lives in :mod:`.lime_ensemble`, the gradient and
occlusion methods in :mod:`.gradients`; their conventions are documented there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hemalens.engine.explain.gradients import (
    CAM_METHODS,
    NotApplicable,
    cam_layer,
    gradient_maps,
)
from hemalens.engine.explain.lime_ensemble import ProbsFn, lime_ensemble_maps, model_probs_fn
from hemalens.engine.jobs import Progress, checkpoint

__all__ = [
    "METHODS",
    "ExplanationResult",
    "NotApplicable",
    "explain_cells",
    "methods_for",
    "predicted_classes",
]

METHODS = ("lime", "gradcam", "guided-backprop", "guided-gradcam", "occlusion", "saliency")

#: Keyword options each method accepts (anything else is a ValueError).
_OPTIONS: dict[str, tuple[str, ...]] = {
    "lime": ("num_samples", "segment_params", "hide_color"),
    "gradcam": ("relu",),
    "guided-backprop": (),
    "guided-gradcam": (),
    "occlusion": ("window", "stride", "baseline"),
    "saliency": ("abs",),
}


@dataclass(frozen=True)
class ExplanationResult:
    """Maps of one explanation method for a stack of cells.

    Attributes
    ----------
    maps : ndarray of float32, shape (N, H, W)
        One map per cell at patch resolution (sign conventions: see the method's module).
    targets : ndarray of int64, shape (N,)
        Class explained per cell.
    method : str
        One of :data:`METHODS`.
    seconds : float
        Wall time of the call.
    """

    maps: np.ndarray
    targets: np.ndarray
    method: str
    seconds: float


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """Return the explanation methods that apply to ``model``, in :data:`METHODS` order.

    Parameters
    ----------
    model : Classifier
        The classifier.

    Returns
    -------
    tuple of str
        All of :data:`METHODS` for AlexNet; LeNet5 lacks ``gradcam`` and
        ``guided-gradcam`` (paper 1, A.4).
    """
    try:
        cam_layer(model)
    except NotApplicable:
        return tuple(m for m in METHODS if m not in CAM_METHODS)
    return METHODS


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every module's own previous mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def predicted_classes(model: nn.Module, patches: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Arg-max class of ``model`` (in its current mode) for each patch.

    Parameters
    ----------
    model : Classifier
        Call inside eval mode for the deterministic prediction.
    patches : ndarray, shape (N, H, W)
        Float32 patches.
    batch_size : int
        Patches per forward pass.

    Returns
    -------
    ndarray of int64, shape (N,)
        Predicted classes.
    """
    probs = model_probs_fn(model, batch_size)(patches)
    return probs.argmax(axis=1).astype(np.int64)


def _n_classes(model: nn.Module, patch: np.ndarray) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "n_classes"):
        return int(spec.n_classes)
    return int(model_probs_fn(model)(patch[None]).shape[1])


def _check_patches(patches: np.ndarray) -> np.ndarray:
    x = np.asarray(patches)
    if x.ndim != 3:
        raise ValueError(f"patches must have shape (N, H, W), got ndim={x.ndim} {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("patches: empty stack, nothing to explain")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"patches must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise ValueError(f"patches hold NaN or inf values in {int(bad.sum())} cell(s), "
                         f"first index {int(np.argmax(bad))}")
    return np.ascontiguousarray(x)


def _check_targets(targets, n: int, n_classes: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {t.shape}")
    if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and np.all(t == np.round(t))):
        raise ValueError(f"targets must be integer classes, got dtype {t.dtype}")
    t = t.astype(np.int64)
    if t.min() < 0 or t.max() >= n_classes:
        raise ValueError(
            f"targets out of range: need 0..{n_classes - 1}, got {t.min()}..{t.max()}"
        )
    return t


def _check_options(method: str, options: dict, shape: tuple[int, ...]) -> None:
    if method == "occlusion":
        window = options.get("window", 6)
        stride = options.get("stride", 1)
        if not 1 <= int(window) <= min(shape):
            raise ValueError(f"occlusion window must be within 1..{min(shape)}, got {window}")
        if not 1 <= int(stride) <= int(window):
            raise ValueError(f"occlusion stride must be within 1..window={window}, got {stride}")
    if method == "lime" and int(options.get("num_samples", 1000)) < 2:
        raise ValueError(f"lime num_samples must be >= 2, got {options['num_samples']}")


def explain_cells(
    model: nn.Module,
    patches: np.ndarray,
    method: str,
    *,
    targets: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    probs_fn: ProbsFn | None = None,
    progress: Progress | None = None,
    **options,
) -> ExplanationResult:
    """Explain the classification of each cell with one method.

    Parameters
    ----------
    model : Classifier
        Used in eval mode during the call; every module's previous mode is restored. The
        gradient methods work on a private copy, so the model's weights are never touched.
    patches : ndarray, shape (N, H, W)
        Normalised patches in [0, 1] (the classifier's input before ``preprocess``).
    method : str
        One of :data:`METHODS` (see :func:`methods_for`).
    targets : array of int, shape (N,), optional
        Class to explain per cell; default the eval-mode predicted class.
    seed : int
        LIME's mask seed (the other methods are deterministic).
    batch_size : int, optional
        LIME: largest forward pass over a cell's perturbed patches (default 512);
        gradients: cells per backward pass (default 64); occlusion: occluded copies per
        forward pass (default 512).
    probs_fn : callable, optional
        LIME only: ``(M, H, W)`` float32 patches -> ``(M, K)`` probabilities, e.g. the
        MC-dropout mean ``lambda p: mc_dropout_probs(model, p, passes=30).mean(0)``;
        default the eval-mode softmax. Default targets stay the eval-mode prediction.
    progress : Progress, optional
        Cancellation is checked between cells/batches; ``set_progress(done, N)``.
    **options
        Per method: ``lime``: ``num_samples`` (1000), ``segment_params`` (paper 1
        Table 4), ``hide_color`` (None = superpixel mean); ``gradcam``: ``relu`` (True);
        ``occlusion``: ``window`` (6), ``stride`` (1), ``baseline`` (0.0);
        ``saliency``: ``abs`` (True).

    Returns
    -------
    ExplanationResult
        ``maps`` (N, H, W) float32, ``targets`` (N,) int64, ``method``, ``seconds``.

    Raises
    ------
    ValueError
        Empty stack, wrong ndim, NaN/inf patches, unknown method or option (or
        ``probs_fn`` with a method other than LIME), targets of the wrong shape or out of
        range.
    NotApplicable
        A ValueError: the method does not apply to this model (Grad-CAM on LeNet5).
    hemalens.engine.jobs.Cancelled
        The progress object asked to stop.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {METHODS}")
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {method!r}; "
                         f"it takes {list(_OPTIONS[method])}")
    if probs_fn is not None and method != "lime":
        raise ValueError(f"probs_fn applies to 'lime' only, not to {method!r}")
    x = _check_patches(patches)
    _check_options(method, options, x.shape[1:])
    if method in CAM_METHODS:
        cam_layer(model)  # NotApplicable before any work
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    with _eval_mode(model):
        if targets is None:
            checkpoint(progress)
            t = predicted_classes(model, x)
        else:
            t = _check_targets(targets, n, _n_classes(model, x[0]))
        if progress is not None:
            progress.set_status(f"{method}: explaining {n} cell(s)")
        if method == "lime":
            fn = probs_fn if probs_fn is not None else model_probs_fn(model, batch_size or 512)
            maps = lime_ensemble_maps(x, fn, t, seed=seed, progress=progress, **options)
        else:
            with torch.enable_grad():
                maps = gradient_maps(model, x, method, t, batch_size=batch_size,
                                     progress=progress, **options)
    return ExplanationResult(
        maps=maps.astype(np.float32, copy=False), targets=t, method=method,
        seconds=time.perf_counter() - t0,
    )
