"""Explanation images: overlay colours (blue +, red -), PNGs of the meta figures, no pyplot."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hemalens.engine.explain.meta import aggregate_by_confidence, cluster_explanations
from hemalens.engine.explain.render import (
    DIVERGING,
    _cmap,
    cluster_png,
    meta_grid_png,
    overlay_png,
    overlay_rgba,
)

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def _patch_and_map():
    patch = np.linspace(0.2, 0.8, 36).reshape(6, 6)  # min-max scaled to 0..1
    m = np.zeros((6, 6))
    m[1, 1] = 2.0  # positive
    m[4, 4] = -2.0  # negative
    m[2, 3] = 8.0  # far above vmax: same colour as vmax
    return patch, m


def test_overlay_colours():
    patch, m = _patch_and_map()
    out = overlay_rgba(patch, m, vmax=2.0, alpha=0.6)
    assert out.shape == (6, 6, 4) and out.dtype == np.uint8
    assert (out[..., 3] == 255).all()
    grey = np.round((patch - 0.2) / 0.6 * 255)
    zero = m == 0
    for ch in range(3):  # zero contribution: the grey patch itself
        np.testing.assert_array_equal(out[..., ch][zero], grey[zero])
    r, g, b = (int(v) for v in out[1, 1, :3])
    assert b > r + 40 and b > g + 40, (r, g, b)  # positive: blue
    r, g, b = (int(v) for v in out[4, 4, :3])
    assert r > b + 40 and r > g + 40, (r, g, b)  # negative: red
    # clipped at vmax: the stronger value gets the colour of vmax (on its own grey)
    base = grey[2, 3] / 255
    want = (1 - 0.6) * base + 0.6 * np.asarray(DIVERGING[2])
    np.testing.assert_allclose(out[2, 3, :3], np.round(want * 255), atol=1)
    # default vmax = max |map|: the strongest value gets full colour
    full = overlay_rgba(patch, m, alpha=1.0)
    np.testing.assert_allclose(full[2, 3, :3] / 255, DIVERGING[2], atol=1 / 255)


def test_overlay_rgb_and_integer_patches():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200
    m = np.zeros((4, 4))
    out = overlay_rgba(rgb, m)
    np.testing.assert_array_equal(out[..., 0], round(0.587 * 200))  # luma of pure green
    u16 = np.full((4, 4), 65535, np.uint16)
    assert (overlay_rgba(u16, m)[..., :3] == 255).all()
    with pytest.raises(ValueError, match=r"map has shape \(3, 3\)"):
        overlay_rgba(rgb, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="alpha"):
        overlay_rgba(rgb, m, alpha=2)
    with pytest.raises(ValueError, match="vmax"):
        overlay_rgba(rgb, m, vmax=0)


def test_numpy_colours_equal_matplotlibs_colour_map():
    from hemalens.engine.explain.render import _diverging_rgb

    v = np.linspace(-1, 1, 41)
    ours = _diverging_rgb(v)
    theirs = np.asarray(_cmap()((v + 1) / 2))[:, :3]
    np.testing.assert_allclose(ours, theirs, atol=2 / 255)


def test_overlay_png(tmp_path):
    patch, m = _patch_and_map()
    out = overlay_png(patch, m, tmp_path / "sub" / "cell.png", title="monocyte 0.93")
    w, h = _png_size(out)
    assert 250 < w < 1000 and 200 < h < 1000
    assert overlay_png(patch, np.zeros((6, 6)), tmp_path / "zero.png").exists()


def test_meta_grid_png(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(60, 10, 10))
    labels = rng.integers(0, 4, 60)
    labels[labels == 3] = 2  # an all-empty row
    grid = aggregate_by_confidence(maps, labels, rng.uniform(0.25, 1, 60), 4)
    out = meta_grid_png(grid, CLASSES, tmp_path / "grid.png", title="LIME, LeNet5")
    w, h = _png_size(out)
    assert w > h > 300  # 4 rows x 6 bins
    assert _png_size(meta_grid_png(grid, None, tmp_path / "codes.png"))[0] > 0
    with pytest.raises(ValueError, match="3 class names"):
        meta_grid_png(grid, CLASSES[:3], tmp_path / "x.png")


def test_cluster_png(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(4, 8, 8))
    truth = np.repeat(np.arange(4), 8)
    maps = t[truth] + 0.2 * rng.normal(size=(32, 8, 8))
    labels = truth.copy()
    labels[0] = -1
    res = cluster_explanations(maps, labels, 4, class_names=CLASSES)
    full = cluster_png(res, CLASSES, tmp_path / "clusters.png", title="t-SNE + k-means")
    small = cluster_png(res, None, tmp_path / "small.png", mean_maps=False)
    (w1, h1), (w2, h2) = _png_size(full), _png_size(small)
    assert w1 > 800 and h1 > h2 > 300 and w1 == w2


def test_rendering_loads_no_pyplot(tmp_path):
    code = (
        "import sys, numpy as np;"
        "from hemalens.engine.explain import render as r;"
        f"r.overlay_png(np.ones((4, 4)), np.eye(4), r'{tmp_path / 'a.png'}');"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
