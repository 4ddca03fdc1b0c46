"""LIME over an ensemble of four SLIC segmentations, vectorised (paper 1, §4.3 and A.3).

For each cell and each of the four SLIC segmentations of paper 1 Table 4, binary masks
are drawn exactly as :meth:`lime.lime_image.LimeImageExplainer.explain_instance` draws
them; all ``4 x num_samples`` perturbed patches are built in one vectorised step and
classified in one call; a weighted ridge surrogate is fitted per segmentation with
:meth:`lime.lime_base.LimeBase.explain_instance_with_data`; the *weighted* coefficients
(not LIME's binary top-k mask) are painted onto their superpixels and the four maps are
averaged.

Equivalence with LIME (pinned by ``tests/engine/test_explain_lime.py``):

- Masks: each (cell, segmentation) draws from a fresh ``numpy.random.RandomState(seed)``:
  ``randint(0, 2, num_samples * n_features)`` reshaped, first row all ones -- what a fresh
  ``LimeImageExplainer(random_state=seed)`` draws when ``explain_instance`` is given a
  ``random_seed`` (otherwise LIME draws one extra integer first). A cell's map therefore
  does not depend on its position in the stack.
- Hidden superpixels: LIME turns a grey image into RGB (``gray2rgb``, three equal
  channels) and, for ``hide_color=None``, replaces a switched-off superpixel by *its own*
  mean value (not the patch mean). We do the same on the grey patch; ``hide_color=v``
  fills with the constant ``v`` as LIME does.
- Surrogate: cosine distance to the all-ones row, kernel ``sqrt(exp(-d^2 / 0.25^2))``,
  ``Ridge(alpha=1)`` on all superpixels (``feature_selection='none'``; LIME's default
  ``'auto'`` with ``num_features=100000`` selects every feature too, only reordered).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial

import numpy as np
import torch
from lime.lime_base import LimeBase
from skimage.segmentation import slic
from sklearn.metrics import pairwise_distances
from threadpoolctl import ThreadpoolController

from hemalens.engine.jobs import Progress, checkpoint

__all__ = [
    "KERNEL_WIDTH",
    "SLIC_PARAMS",
    "ProbsFn",
    "hidden_values",
    "lime_ensemble_maps",
    "lime_kernel",
    "lime_masks",
    "lime_segment_weights",
    "model_probs_fn",
    "perturbed_patches",
    "slic_segments",
]

#: Paper 1 Table 4: (n_segments, compactness, sigma) of the four SLIC segmentations.
SLIC_PARAMS: tuple[tuple[int, float, float], ...] = (
    (15, 10.0, 3.0),
    (25, 10.0, 2.5),
    (35, 25.0, 3.0),
    (50, 15.0, 5.0),
)
#: LimeImageExplainer's default kernel width (on cosine distances).
KERNEL_WIDTH = 0.25

#: Maps ``(M, H, W)`` float32 patches to ``(M, K)`` class probabilities.
ProbsFn = Callable[[np.ndarray], np.ndarray]


@cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


def lime_kernel(d: np.ndarray, kernel_width: float = KERNEL_WIDTH) -> np.ndarray:
    """LimeImageExplainer's default similarity kernel ``sqrt(exp(-d^2 / width^2))``."""
    return np.sqrt(np.exp(-(d**2) / kernel_width**2))


def slic_segments(
    patch: np.ndarray, n_segments: int, compactness: float, sigma: float
) -> np.ndarray:
    """SLIC superpixels of a grey patch, numbered 0..n-1 as LIME requires.

    Parameters
    ----------
    patch : ndarray, shape (H, W)
        Grey patch (any float range; paper 1 uses [0, 1]).
    n_segments, compactness, sigma : int, float, float
        :func:`skimage.segmentation.slic` parameters (paper 1 Table 4).

    Returns
    -------
    ndarray of int64, shape (H, W)
        Superpixel labels ``0 .. n - 1``, every label used (``start_label=0``; relabelled
        to be contiguous should SLIC ever skip one).
    """
    seg = slic(
        np.asarray(patch, dtype=np.float64), n_segments=n_segments, compactness=compactness,
        sigma=sigma, start_label=0, channel_axis=None,
    )
    _, seg = np.unique(seg, return_inverse=True)
    return seg.reshape(np.shape(patch)).astype(np.int64)


def lime_masks(n_features: int, num_samples: int, seed: int) -> np.ndarray:
    """Binary superpixel masks drawn as ``LimeImageExplainer.data_labels`` draws them.

    Parameters
    ----------
    n_features : int
        Superpixels in the segmentation.
    num_samples : int
        Rows (the first is the unperturbed image).
    seed : int
        Seed of a fresh ``numpy.random.RandomState``.

    Returns
    -------
    ndarray of int, shape (num_samples, n_features)
        0/1 masks, row 0 all ones.
    """
    rs = np.random.RandomState(seed)
    data = rs.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
    data[0, :] = 1
    return data


def hidden_values(
    patch: np.ndarray, segments: np.ndarray, hide_color: float | None = None
) -> np.ndarray:
    """Return the fill of switched-off superpixels (LIME's ``fudged_image``).

    Parameters
    ----------
    patch : ndarray, shape (H, W)
        Grey patch.
    segments : ndarray of int, shape (H, W)
        Labels ``0 .. n - 1``.
    hide_color : float, optional
        ``None`` (LIME's default): each superpixel's own mean; else this constant.

    Returns
    -------
    ndarray, shape (H, W), dtype of ``patch``
        The fill image.
    """
    if hide_color is not None:
        return np.full_like(patch, hide_color)
    fill = np.empty_like(patch)
    for s in range(int(segments.max()) + 1):
        # np.mean in the patch's dtype, as LIME computes it: bit-identical fills
        inside = segments == s
        fill[inside] = np.mean(patch[inside])
    return fill


def perturbed_patches(
    patch: np.ndarray,
    segmentations: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    hide_color: float | None = None,
) -> np.ndarray:
    """All perturbed copies of one patch for all segmentations, in one vectorised step.

    Parameters
    ----------
    patch : ndarray, shape (H, W)
        Grey patch.
    segmentations : sequence of ndarray (H, W)
        Superpixel labels per segmentation.
    masks : sequence of ndarray (num_samples_s, n_features_s)
        0/1 masks per segmentation (:func:`lime_masks`).
    hide_color : float, optional
        See :func:`hidden_values`.

    Returns
    -------
    ndarray, shape (sum of num_samples_s, H, W), dtype of ``patch``
        Segmentation after segmentation, in mask-row order.
    """
    out = np.empty((sum(len(m) for m in masks),) + patch.shape, dtype=patch.dtype)
    row = 0
    for m, seg in zip(masks, segmentations, strict=True):
        block = out[row:row + len(m)]
        block[...] = hidden_values(patch, seg, hide_color)
        # pixel p of sample j keeps its value where mask[j, segment(p)] == 1
        np.copyto(block, patch, where=m.astype(bool)[:, seg])
        row += len(m)
    return out


def model_probs_fn(model: torch.nn.Module, batch_size: int | None = 512) -> ProbsFn:
    """Softmax probabilities of ``model`` as a LIME classifier function.

    Parameters
    ----------
    model : Classifier
        Anything with ``preprocess(patches)`` and ``forward``; used in its current mode
        (put it in eval mode first).
    batch_size : int, optional
        Largest forward pass; ``None`` classifies everything at once. Chunks of 512 ran
        LeNet5 twice as fast as one pass over 4000 patches on the CPU (cache reuse).

    Returns
    -------
    callable
        ``(M, H, W)`` float32 patches -> ``(M, K)`` float32 probabilities.
    """

    def probs(patches: np.ndarray) -> np.ndarray:
        step = batch_size or max(len(patches), 1)
        out = []
        with torch.no_grad():
            for i in range(0, len(patches), step):
                batch = torch.from_numpy(np.ascontiguousarray(patches[i:i + step]))
                x = model.preprocess(batch)  # type: ignore[operator]
                out.append(torch.softmax(model(x), dim=1).float().cpu().numpy())
        return np.concatenate(out)

    return probs


def lime_segment_weights(
    patch: np.ndarray,
    segmentations: Sequence[np.ndarray],
    probs_fn: ProbsFn,
    target: int,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    hide_color: float | None = None,
    kernel_width: float = KERNEL_WIDTH,
) -> list[np.ndarray]:
    """LIME surrogate weights of one cell for each segmentation (one model call).

    Parameters
    ----------
    patch : ndarray, shape (H, W)
        Grey patch (float32).
    segmentations : sequence of ndarray (H, W)
        Superpixel labels ``0 .. n_s - 1`` per segmentation.
    probs_fn : callable
        ``(M, H, W)`` -> ``(M, K)`` probabilities; called once with all perturbed patches.
    target : int
        Class explained.
    num_samples : int
        Masks per segmentation (LIME's ``num_samples``).
    seed : int
        Seed of each segmentation's mask draw (:func:`lime_masks`).
    hide_color : float, optional
        See :func:`hidden_values`.
    kernel_width : float
        Width of :func:`lime_kernel`.

    Returns
    -------
    list of ndarray of float64, shape (n_s,)
        Ridge coefficient of every superpixel (LIME's ``local_exp[target]`` as an array).
    """
    masks = [lime_masks(int(seg.max()) + 1, num_samples, seed) for seg in segmentations]
    probs = np.asarray(probs_fn(perturbed_patches(patch, segmentations, masks, hide_color)))
    base = LimeBase(partial(lime_kernel, kernel_width=kernel_width))
    out = []
    # The ridge fits are tiny (1000 x 50): a multi-threaded BLAS only waits for busy
    # cores there (LeNet5 cell: 280 -> 170 ms CPU on a loaded 2-core machine).
    with _threadpools().limit(limits=1, user_api="blas"):
        for k, data in enumerate(masks):
            labels = probs[k * num_samples:(k + 1) * num_samples]
            distances = pairwise_distances(data, data[:1], metric="cosine").ravel()
            _, exp, _, _ = base.explain_instance_with_data(
                data, labels, distances, target, data.shape[1], feature_selection="none"
            )
            w = np.zeros(data.shape[1])
            for feature, weight in exp:
                w[feature] = weight
            out.append(w)
    return out


def lime_ensemble_maps(
    patches: np.ndarray,
    probs_fn: ProbsFn,
    targets: np.ndarray,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    segment_params: Sequence[tuple[int, float, float]] = SLIC_PARAMS,
    hide_color: float | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Weighted LIME maps averaged over several SLIC segmentations, one per cell.

    Parameters
    ----------
    patches : ndarray, shape (N, H, W)
        Grey patches in [0, 1].
    probs_fn : callable
        ``(M, H, W)`` float32 -> ``(M, K)`` probabilities (:func:`model_probs_fn`, or
        MC-dropout mean probabilities); called once per cell with
        ``len(segment_params) * num_samples`` patches.
    targets : ndarray of int, shape (N,)
        Class explained per cell.
    num_samples : int
        Masks per segmentation.
    seed : int
        Mask seed (the same for every cell and segmentation; see module docstring).
    segment_params : sequence of (n_segments, compactness, sigma)
        SLIC settings; default paper 1 Table 4.
    hide_color : float, optional
        ``None``: superpixel mean (LIME's default); else a constant fill.
    progress : Progress, optional
        Checked for cancellation and told ``(done, N)`` after every cell.

    Returns
    -------
    ndarray of float32, shape (N, H, W)
        Signed map: each pixel holds the mean over segmentations of its superpixel's
        ridge coefficient (positive = supports ``target``).
    """
    patches = np.asarray(patches, dtype=np.float32)
    maps = np.zeros(patches.shape, dtype=np.float32)
    for i, patch in enumerate(patches):
        checkpoint(progress)
        segs = [slic_segments(patch, *p) for p in segment_params]
        weights = lime_segment_weights(
            patch, segs, probs_fn, int(targets[i]), num_samples=num_samples, seed=seed,
            hide_color=hide_color,
        )
        maps[i] = np.mean([w[s] for w, s in zip(weights, segs, strict=True)], axis=0)
        if progress is not None:
            progress.set_progress(i + 1, len(patches))
    return maps
