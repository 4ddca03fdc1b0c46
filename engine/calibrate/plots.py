"""Reliability diagrams as PNG files (paper 1, Figs. 2-3), drawn with matplotlib's Agg.

:func:`plot_reliability` draws one run per panel (bars of per-bin accuracy, the gap to
the mean confidence, the identity in red); :func:`plot_reliability_runs` draws the
box-plot variant over repeated runs (one box of per-bin accuracies per bin). Both take
the dicts of :func:`~hemalens.engine.calibrate.metrics.reliability_data`. matplotlib is
imported inside the functions, never at module import, and pyplot is not used at all
(``matplotlib.figure.Figure`` renders with Agg and keeps no global state, so it is safe
in worker threads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _ece_mce(rel: Mapping) -> tuple[float, float]:
    count = np.asarray(rel["count"], dtype=np.float64)
    filled = count > 0
    if not filled.any():
        return math.nan, math.nan
    gap = np.abs(np.asarray(rel["accuracy"])[filled] - np.asarray(rel["confidence"])[filled])
    return float(np.sum(count[filled] / count.sum() * gap)), float(gap.max())


def _check_rel(rel: Mapping, where: str) -> int:
    for key in ("edges", "accuracy", "confidence", "count"):
        if key not in rel:
            raise ValueError(f"{where}: reliability data lacks {key!r}")
    m = len(rel["edges"]) - 1
    if m < 1 or any(len(rel[k]) != m for k in ("accuracy", "confidence", "count")):
        raise ValueError(f"{where}: reliability data has inconsistent bin counts")
    return m


def _panels(data, single_key: str) -> dict:
    if isinstance(data, Mapping) and "edges" in data:
        return {single_key: data}
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("nothing to plot: no panels given")
        return dict(data)
    return {single_key: data}


def _figure(n_panels: int, title: str | None):
    from matplotlib.figure import Figure

    ncols = min(n_panels, 4)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.6 * nrows + (0.4 if title else 0.0)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig, axes


def _frame(ax, name: str) -> None:
    ax.plot([0, 1], [0, 1], color="red", lw=1.2, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(name, fontsize=9)
    ax.set_aspect("equal")


def _save(fig, path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120, format="png")
    return out


def plot_reliability(data, path, *, title: str | None = None) -> Path:
    """Write a reliability diagram (one panel per run) as a PNG.

    Parameters
    ----------
    data : dict or mapping of str to dict
        One :func:`reliability_data` result, or panel name -> result.
    path : str or Path
        Output PNG; parent folders are created.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    panels = _panels(data, "")
    fig, axes = _figure(len(panels), title)
    for ax, (name, rel) in zip(axes, panels.items(), strict=False):
        _check_rel(rel, f"panel {name!r}")
        edges = np.asarray(rel["edges"], dtype=np.float64)
        width = np.diff(edges)
        acc = np.nan_to_num(np.asarray(rel["accuracy"], dtype=np.float64))
        conf = np.asarray(rel["confidence"], dtype=np.float64)
        filled = np.asarray(rel["count"]) > 0
        ax.bar(edges[:-1], acc, width=width, align="edge", color="tab:blue",
               edgecolor="black", lw=0.6, label="accuracy")
        ax.bar(edges[:-1][filled], (conf - acc)[filled], bottom=acc[filled],
               width=width[filled], align="edge", color="tab:red", alpha=0.25,
               edgecolor="tab:red", hatch="//", lw=0.6, label="gap to confidence")
        ece, mce = _ece_mce(rel)
        _frame(ax, f"{name}  ECE {ece:.3f}  MCE {mce:.3f}".strip())
        ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def plot_reliability_runs(runs, path, *, title: str | None = None) -> Path:
    """Write the box-plot reliability diagram over repeated runs (paper Figs. 2-3).

    For each bin, a box summarises the accuracies of the runs in which that bin was not
    empty; the red line is perfect calibration. Panel titles give ECE and MCE as mean and
    standard deviation over runs.

    Parameters
    ----------
    runs : sequence of dict, or mapping of str to sequence of dict
        :func:`reliability_data` results of repeated runs (same bins), or panel name ->
        such a sequence (e.g. ``"LeNet5 uncalibrated"``, ``"LeNet5 calibrated"``).
    path : str or Path
        Output PNG; parent folders are created.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    if isinstance(runs, Mapping) and "edges" in runs:
        raise ValueError("plot_reliability_runs needs a sequence of runs, got a single run")
    panels: dict[str, Sequence] = dict(runs) if isinstance(runs, Mapping) else {"": runs}
    if not panels:
        raise ValueError("nothing to plot: no panels given")
    fig, axes = _figure(len(panels), title)
    for ax, (name, rels) in zip(axes, panels.items(), strict=False):
        rels = list(rels)
        if not rels:
            raise ValueError(f"panel {name!r}: no runs")
        m = {_check_rel(r, f"panel {name!r}") for r in rels}
        if len(m) != 1:
            raise ValueError(f"panel {name!r}: runs use different numbers of bins")
        edges = np.asarray(rels[0]["edges"], dtype=np.float64)
        centres = 0.5 * (edges[:-1] + edges[1:])
        acc = np.array([np.asarray(r["accuracy"], dtype=np.float64) for r in rels])
        boxes = [col[np.isfinite(col)] for col in acc.T]
        keep = [i for i, b in enumerate(boxes) if b.size]
        if keep:
            ax.boxplot([boxes[i] for i in keep], positions=centres[keep],
                       widths=0.7 * np.diff(edges)[keep], manage_ticks=False,
                       patch_artist=True, boxprops={"facecolor": "tab:blue", "alpha": 0.5},
                       medianprops={"color": "black"}, flierprops={"markersize": 3})
        scores = np.array([_ece_mce(r) for r in rels])
        ece_m, mce_m = np.nanmean(scores, axis=0)
        ece_s, mce_s = np.nanstd(scores, axis=0)
        label = (f"{name}  ECE {ece_m:.3f}±{ece_s:.3f}\nMCE {mce_m:.3f}±{mce_s:.3f}"
                 f"  ({len(rels)} runs)")
        _frame(ax, label.strip())
        ax.set_xticks(edges[::2])
    return _save(fig, path)
