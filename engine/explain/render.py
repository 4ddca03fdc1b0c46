"""Explanation images: single-cell overlays and the meta-explanation figures (paper 1).

Colours follow the paper (§4.3): **blue = positive** contribution to the explained class,
**red = negative** (opposing), on a symmetric scale ``[-vmax, vmax]`` whose middle is
white. One colour map, :data:`DIVERGING`, serves every function here, and
:func:`overlay_rgba` (pure numpy, for the GUI) and :func:`overlay_png` produce the same
pixels: the patch is shown in grey and the map colour is blended over it with an opacity
``alpha * |value| / vmax``, so a zero contribution leaves the grey patch untouched.

:func:`meta_grid_png` draws paper Fig. 6 (mean map per class and confidence bin) and
:func:`cluster_png` paper Fig. 7 (t-SNE map of the explanations with its k-means
clusters, their class composition and mean maps). matplotlib is imported inside the
functions and pyplot is not used (``matplotlib.figure.Figure`` renders with Agg and keeps
no global state, so it is safe in worker threads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.explain.meta import ClusterResult, MetaGrid

__all__ = ["DIVERGING", "cluster_png", "meta_grid_png", "overlay_png", "overlay_rgba"]

#: Nodes of the diverging colour map at -vmax, 0 and +vmax (RGB in [0, 1]).
DIVERGING: tuple[tuple[float, float, float], ...] = (
    (0.80, 0.06, 0.06),  # negative: red
    (1.00, 1.00, 1.00),  # zero: white (fully transparent in overlays)
    (0.06, 0.27, 0.85),  # positive: blue
)
_DPI = 110


def _cmap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("hemalens_diverging", DIVERGING, N=256)


def _grey(patch: Any) -> np.ndarray:
    """Patch as float grey levels in [0, 1]: integers scaled by their range, floats min-max."""
    p = np.asarray(patch)
    if p.ndim == 3 and p.shape[-1] == 3:
        scale = float(np.iinfo(p.dtype).max) if p.dtype.kind in "iu" else None
        p = p.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma
        if scale is not None:
            return np.clip(p / scale, 0.0, 1.0)
    elif p.ndim != 2:
        raise ValueError(f"patch must be (H, W) or (H, W, 3), got shape {p.shape}")
    elif p.dtype.kind in "iu":
        return np.clip(p.astype(np.float64) / float(np.iinfo(p.dtype).max), 0.0, 1.0)
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    if not finite.any():
        return np.full(p.shape, 0.5)
    lo, hi = float(p[finite].min()), float(p[finite].max())
    if hi <= lo:
        return np.full(p.shape, 0.5)
    return np.clip(np.where(finite, (p - lo) / (hi - lo), 0.5), 0.0, 1.0)


def _check_map(patch_shape: tuple[int, ...], m: Any) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape != tuple(patch_shape[:2]):
        raise ValueError(f"map has shape {a.shape}, expected {tuple(patch_shape[:2])} "
                         "(the patch's height and width)")
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def _vmax(values: np.ndarray, vmax: float | None) -> float:
    if vmax is not None:
        if not (math.isfinite(vmax) and vmax > 0):
            raise ValueError(f"vmax must be positive and finite, got {vmax}")
        return float(vmax)
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _diverging_rgb(v: np.ndarray) -> np.ndarray:
    """RGB of normalised values ``v`` in [-1, 1], linear between the :data:`DIVERGING` nodes."""
    neg, mid, pos = (np.asarray(c, dtype=np.float64) for c in DIVERGING)
    t = np.abs(v)[..., None]
    return np.where(v[..., None] >= 0, mid + t * (pos - mid), mid + t * (neg - mid))


def overlay_rgba(
    patch: Any, map: Any, vmax: float | None = None, alpha: float = 0.75
) -> np.ndarray:
    """Blend an explanation map over a grey patch (pure numpy, the colours of the PNGs).

    Parameters
    ----------
    patch : array_like
        ``(H, W)`` phase/grey patch (floats are min-max scaled, integers by their dtype's
        range) or ``(H, W, 3)`` RGB patch (shown as its luma).
    map : array_like
        ``(H, W)`` explanation; NaN counts as 0.
    vmax : float, optional
        Value of full colour; default ``max |map|`` (1 for an all-zero map).
    alpha : float
        Opacity of the colour at ``|map| >= vmax``, in [0, 1]. The default 0.75 keeps the
        cell visible under the strongest evidence; at 0.5 blue faded on bright patches.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W, 4)`` opaque RGBA: grey where the map is 0, towards blue where it is
        positive and towards red where negative.

    Raises
    ------
    ValueError
        Shapes that do not fit, ``alpha`` outside [0, 1] or a non-positive ``vmax``.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    grey = _grey(patch)
    m = _check_map(grey.shape, map)
    v = np.clip(m / _vmax(m, vmax), -1.0, 1.0)
    weight = (float(alpha) * np.abs(v))[..., None]
    rgb = (1.0 - weight) * grey[..., None] + weight * _diverging_rgb(v)
    out = np.empty(grey.shape + (4,), np.uint8)
    out[..., :3] = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    out[..., 3] = 255
    return out


def _save(fig, path: str | PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI, format="png")
    return out


def _colorbar(fig, ax, vmax: float, label: str) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    sm = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=_cmap())
    cb = fig.colorbar(sm, ax=ax, shrink=0.85)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def overlay_png(
    patch: Any,
    map: Any,
    path: str | PathLike[str],
    *,
    title: str | None = None,
    vmax: float | None = None,
    alpha: float = 0.75,
) -> Path:
    """Write one cell's explanation over its patch as a PNG, with a colour bar.

    Parameters
    ----------
    patch : array_like
        ``(H, W)`` or ``(H, W, 3)`` patch (see :func:`overlay_rgba`).
    map : array_like
        ``(H, W)`` explanation map.
    path : str or PathLike
        Output PNG; parent folders are created.
    title : str, optional
        Figure title (e.g. class and confidence).
    vmax : float, optional
        Symmetric colour limit; default ``max |map|``.
    alpha : float
        Opacity of full colour.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.figure import Figure

    m = np.asarray(map, dtype=np.float64)
    top = _vmax(np.nan_to_num(m), vmax)
    rgba = overlay_rgba(patch, m, vmax=top, alpha=alpha)
    fig = Figure(figsize=(3.6, 3.0), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    _colorbar(fig, ax, top, "contribution (blue +, red -)")
    return _save(fig, path)


def _names(names: Sequence[str] | None, k: int, fallback: Sequence[str] | None = None) -> list[str]:
    if names is None:
        names = fallback if fallback else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    return [str(n) for n in names]


def meta_grid_png(
    grid: MetaGrid,
    class_names: Sequence[str] | None,
    path: str | PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Write the aggregated meta-explanations as a class x confidence-bin grid (paper Fig. 6).

    One row per class, one column per confidence bin; each panel shows the mean map with
    its number of cells, all on one shared symmetric colour scale (blue +, red -).
    Empty panels say so.

    Parameters
    ----------
    grid : MetaGrid
        From :func:`~hemalens.engine.explain.meta.aggregate_by_confidence`.
    class_names : sequence of str or None
        Row labels (``K`` names); None: the class codes.
    path : str or PathLike
        Output PNG; parent folders are created.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.figure import Figure

    k, b = grid.counts.shape
    names = _names(class_names, k)
    top = _vmax(grid.mean_maps, None)
    cmap = _cmap()
    fig = Figure(figsize=(1.45 * b + 1.4, 1.5 * k + 0.5 + (0.3 if title else 0.0)),
                 layout="constrained")
    axes = fig.subplots(k, b, squeeze=False)
    for c in range(k):
        for j in range(b):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            n = int(grid.counts[c, j])
            if n:
                ax.imshow(grid.mean_maps[c, j], cmap=cmap, vmin=-top, vmax=top,
                          interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "no cells", ha="center", va="center", fontsize=7,
                        color="0.5", transform=ax.transAxes)
            lo, hi = grid.bin_edges[j], grid.bin_edges[j + 1]
            head = f"{lo:.2f}-{hi:.2f}\n" if c == 0 else ""
            ax.set_title(f"{head}n={n}", fontsize=7)
            if j == 0:
                ax.set_ylabel(names[c], fontsize=8)
    fig.supxlabel("confidence", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _colorbar(fig, axes.ravel().tolist(), top, "mean contribution")
    return _save(fig, path)


def _class_colours(k: int) -> list:
    from matplotlib import colormaps

    base = colormaps["tab10" if k <= 10 else "tab20"]
    return [base(i % base.N) for i in range(k)]


def cluster_png(
    result: ClusterResult,
    class_names: Sequence[str] | None,
    path: str | PathLike[str],
    *,
    title: str | None = None,
    mean_maps: bool = True,
) -> Path:
    """Write the clustering of explanations (paper Fig. 7) as a PNG.

    Top row: the t-SNE map coloured by given class, the same map coloured by k-means
    cluster (labelled ``C<id>`` at the centroids) and a stacked bar chart of each
    cluster's class composition (fractions of its labelled members). Bottom row (with
    ``mean_maps``): the mean explanation of each cluster on one symmetric colour scale.

    Parameters
    ----------
    result : ClusterResult
        From :func:`~hemalens.engine.explain.meta.cluster_explanations`.
    class_names : sequence of str or None
        Class names; None: those stored in ``result``.
    path : str or PathLike
        Output PNG; parent folders are created.
    title : str, optional
        Figure title.
    mean_maps : bool
        Add the row of cluster mean maps.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.figure import Figure

    k = len(result.clusters)
    n_cls = len(result.class_names) if result.class_names else int(result.labels.max()) + 1
    names = _names(class_names, n_cls, result.class_names)
    colours = _class_colours(max(n_cls, k))
    emb = np.asarray(result.embedding)
    fig = Figure(figsize=(12.0, 7.2 if mean_maps else 4.2), layout="constrained")
    top: Any = fig
    bottom: Any = None
    if mean_maps:
        subfigs: Any = fig.subfigures(2, 1, height_ratios=[1.4, 1.0])
        top, bottom = subfigs[0], subfigs[1]
    ax_cls, ax_clu, ax_bar = top.subplots(1, 3)
    dot = float(np.clip(2000 / max(len(emb), 1), 1.0, 25.0))

    unl = result.labels < 0
    if unl.any():
        ax_cls.scatter(emb[unl, 0], emb[unl, 1], s=dot, color="0.7", label="unlabelled",
                       rasterized=True, linewidths=0)
    for i, nm in enumerate(names):
        sel = result.labels == i
        if sel.any():
            ax_cls.scatter(emb[sel, 0], emb[sel, 1], s=dot, color=colours[i], label=nm,
                           rasterized=True, linewidths=0)
    ax_cls.set_title("t-SNE of explanations, by class", fontsize=9)
    ax_cls.legend(fontsize=7, markerscale=max(1.0, 12 / dot) ** 0.5, loc="best")

    clu_colours = _class_colours(k)
    for c in range(k):
        sel = result.assignment == c
        if not sel.any():
            continue
        ax_clu.scatter(emb[sel, 0], emb[sel, 1], s=dot, color=clu_colours[c],
                       rasterized=True, linewidths=0)
        cx, cy = emb[sel].mean(axis=0)
        ax_clu.text(cx, cy, f"C{c}", fontsize=9, weight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0})
    ax_clu.set_title(f"k-means on the t-SNE map (k={k})", fontsize=9)
    for ax in (ax_cls, ax_clu):
        ax.set_xticks([])
        ax.set_yticks([])

    x = np.arange(k)
    bottom_acc = np.zeros(k)
    for i, nm in enumerate(names):
        frac = np.array([float(cl["composition"].get(nm, 0.0)) for cl in result.clusters])
        ax_bar.bar(x, frac, bottom=bottom_acc, color=colours[i], label=nm, width=0.7)
        bottom_acc += frac
    for c, cl in enumerate(result.clusters):
        ax_bar.text(c, min(bottom_acc[c], 1.0) + 0.02, f"n={cl['size']}", ha="center",
                    fontsize=7)
    ax_bar.set_xticks(x, [f"C{c}" for c in range(k)], fontsize=8)
    ax_bar.set_ylim(0, 1.12)
    ax_bar.set_ylabel("fraction of labelled cells", fontsize=8)
    ax_bar.set_title("class composition per cluster", fontsize=9)
    ax_bar.legend(fontsize=7, loc="upper right", ncols=min(len(names), 4))

    if bottom is not None:
        vm = _vmax(result.mean_maps, None)
        cmap = _cmap()
        axes = bottom.subplots(1, k, squeeze=False)[0]
        for c, ax in enumerate(axes):
            ax.imshow(result.mean_maps[c], cmap=cmap, vmin=-vm, vmax=vm,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"C{c} mean (n={result.clusters[c]['size']})", fontsize=8)
        _colorbar(bottom, axes.tolist(), vm, "mean contribution")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
