"""LIME ensemble: exact agreement with lime's LimeImageExplainer, determinism, plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lime.lime_image import LimeImageExplainer
from scipy.ndimage import gaussian_filter

from hemalens.engine.explain.lime_ensemble import (
    SLIC_PARAMS,
    hidden_values,
    lime_ensemble_maps,
    lime_masks,
    lime_segment_weights,
    model_probs_fn,
    perturbed_patches,
    slic_segments,
)
from hemalens.engine.explain.methods import explain_cells
from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.models import ModelSpec, build_model

SEED = 3
TARGET = 1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelSpec("lenet5", 4, 0.25, 32)).eval()


@pytest.fixture(scope="module")
def patches():
    rng = np.random.default_rng(0)
    p = np.stack([gaussian_filter(rng.random((50, 50)), 2) for _ in range(3)])
    p = (p - p.min(axis=(1, 2), keepdims=True)) / np.ptp(p, axis=(1, 2), keepdims=True)
    return p.astype(np.float32)


def _lime_reference(patch, probs_fn, params, num_samples, hide_color=None):
    """LimeImageExplainer on the grey patch (LIME makes it RGB; we classify channel 0)."""
    explainer = LimeImageExplainer(random_state=SEED)
    seen = []

    def classifier_fn(images):
        seen.append(images[..., 0].astype(np.float32))
        return probs_fn(seen[-1])

    exp = explainer.explain_instance(
        patch, classifier_fn, labels=(TARGET,), top_labels=None, hide_color=hide_color,
        num_samples=num_samples, batch_size=num_samples, random_seed=0,
        segmentation_fn=lambda rgb: slic_segments(rgb[..., 0], *params),
    )
    weights = np.zeros(len(exp.local_exp[TARGET]))
    for feature, w in exp.local_exp[TARGET]:
        weights[feature] = w
    return weights, np.concatenate(seen), exp.segments


def test_weights_equal_lime_image_explainer_for_all_four_segmentations(model, patches):
    patch, probs_fn = patches[0], model_probs_fn(model)
    segs = [slic_segments(patch, *p) for p in SLIC_PARAMS]
    ours = lime_segment_weights(patch, segs, probs_fn, TARGET, num_samples=1000, seed=SEED)
    masks = [lime_masks(int(s.max()) + 1, 1000, SEED) for s in segs]
    ours_images = perturbed_patches(patch, segs, masks)
    for k, params in enumerate(SLIC_PARAMS):
        ref, ref_images, ref_segments = _lime_reference(patch, probs_fn, params, 1000)
        np.testing.assert_array_equal(ref_segments, segs[k])
        # the perturbed images LIME built (superpixel-mean fill) are ours, bit for bit
        np.testing.assert_array_equal(ref_images, ours_images[k * 1000:(k + 1) * 1000])
        assert np.abs(ref).max() > 1e-4  # a real signal, not zeros against zeros
        np.testing.assert_allclose(ours[k], ref, rtol=0, atol=1e-6)


def test_constant_hide_color_matches_lime(model, patches):
    patch, probs_fn = patches[1], model_probs_fn(model)
    params = SLIC_PARAMS[1]
    seg = slic_segments(patch, *params)
    ours = lime_segment_weights(patch, [seg], probs_fn, TARGET, num_samples=400, seed=SEED,
                                hide_color=0.0)[0]
    ref, _, _ = _lime_reference(patch, probs_fn, params, 400, hide_color=0.0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_slic_segments_are_numbered_from_zero_without_gaps(patches):
    for params in SLIC_PARAMS:
        seg = slic_segments(patches[0], *params)
        assert seg.shape == (50, 50) and seg.dtype == np.int64
        np.testing.assert_array_equal(np.unique(seg), np.arange(seg.max() + 1))


def test_hidden_values_are_superpixel_means(patches):
    seg = slic_segments(patches[0], *SLIC_PARAMS[0])
    fill = hidden_values(patches[0], seg)
    for s in np.unique(seg):
        np.testing.assert_allclose(fill[seg == s], patches[0][seg == s].mean(), rtol=1e-6)


def test_ensemble_map_is_mean_of_painted_weights_and_probs_fn_called_once(model, patches):
    calls = []
    base = model_probs_fn(model)

    def probs_fn(x):
        calls.append(x.shape)
        return base(x)

    targets = np.array([0, 2])
    maps = lime_ensemble_maps(patches[:2], probs_fn, targets, num_samples=200, seed=SEED)
    assert maps.shape == (2, 50, 50) and maps.dtype == np.float32
    assert calls == [(800, 50, 50), (800, 50, 50)]  # one model call per cell, 4 x 200
    segs = [slic_segments(patches[1], *p) for p in SLIC_PARAMS]
    w = lime_segment_weights(patches[1], segs, base, 2, num_samples=200, seed=SEED)
    expected = np.mean([wk[s] for wk, s in zip(w, segs, strict=True)], axis=0)
    np.testing.assert_allclose(maps[1], expected, rtol=1e-6, atol=1e-9)


def test_seeded_deterministic_and_position_independent(model, patches):
    kw = {"targets": np.array([1, 1, 1]), "num_samples": 150}
    a = explain_cells(model, patches, "lime", seed=5, **kw).maps
    b = explain_cells(model, patches, "lime", seed=5, **kw).maps
    np.testing.assert_array_equal(a, b)
    alone = explain_cells(model, patches[2:], "lime", seed=5, targets=[1], num_samples=150)
    np.testing.assert_array_equal(alone.maps[0], a[2])
    c = explain_cells(model, patches, "lime", seed=6, **kw).maps
    assert not np.allclose(a, c)


def test_mc_dropout_style_probs_fn_is_used(model, patches):
    # a classifier that looks only at the texture of the left half (hiding a superpixel
    # flattens it): the right half must get (almost) no weight
    def probs_fn(x):
        p1 = 1 / (1 + np.exp(-40 * (x[:, :, :25].std(axis=(1, 2)) - 0.15)))
        return np.stack([1 - p1, p1], axis=1)

    res = explain_cells(model, patches[:1], "lime", targets=[1], probs_fn=probs_fn,
                        num_samples=300)
    m = np.abs(res.maps[0])
    assert m[:, :25].sum() > 3 * m[:, 25:].sum()


def test_progress_and_cancellation(model, patches):
    seen = []
    progress = CallbackProgress(on_progress=lambda d, t: seen.append((d, t)))
    explain_cells(model, patches[:2], "lime", num_samples=50, progress=progress)
    assert seen[-2:] == [(1, 2), (2, 2)]
    progress.cancel()
    with pytest.raises(Cancelled):
        explain_cells(model, patches[:2], "lime", num_samples=50, progress=progress)
