"""``hemalens interventions dry-run``: intervention strength on a fixed embedding (paper 2).

Reads the embedding from a project (its stored embedding model) or from an ``.npz``, runs
:func:`hemalens.engine.embed.dryrun.dry_run` over every combination of the requested
intervention types, and writes the curves (PNG), Table I (Markdown) and the JSON result.

Validation points are transformed with their class labels, as in the paper's dry-run: the
scores measure how strongly interventions separate the classes, not how well a classifier
generalises.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hemalens.engine.embed.dryrun import dry_run, load_embeddings_npz, plot_dry_run, table_i
from hemalens.engine.embed.interventions import TYPES
from hemalens.engine.jobs import Progress
from hemalens.engine.scaleout import Cluster

__all__ = ["dry_run_file", "type_combinations"]


def type_combinations(types: Sequence[str]) -> list[tuple[str, ...]]:
    """All combinations of the given intervention types worth a dry-run.

    Every non-empty subset, in the canonical order c, s, os, r, except those with an
    ortho-shift but no shift (the ortho-shift only changes the shift's direction).
    Combinations with and without contraction are both included so the curves show what
    contraction adds.

    Parameters
    ----------
    types : sequence of str
        Subset of ``("c", "s", "os", "r")``.

    Returns
    -------
    list of tuple of str
        Contraction combinations first, then by size.

    Raises
    ------
    ValueError
        Unknown or no types.
    """
    chosen = [t for t in TYPES if t in set(types)]
    unknown = sorted(set(types) - set(TYPES))
    if unknown or not chosen:
        raise ValueError(f"intervention types are c, s, os, r; got {', '.join(types) or 'none'}")
    combos = [c for n in range(1, len(chosen) + 1) for c in itertools.combinations(chosen, n)
              if not ("os" in c and "s" not in c)]
    return sorted(combos, key=lambda c: ("c" not in c, len(c), c))


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if path.is_dir() or (path.is_file() and h5py.is_hdf5(path)):  # a project (or version 1)
        from hemalens.engine.embed.store import read_embeddings

        X, y, groups, _ = read_embeddings(path)
        return X.astype(np.float64), y, groups, "project"
    X, y, groups = load_embeddings_npz(path)
    return X, y, groups, "npz"


def dry_run_file(
    path: str | Path,
    *,
    types: Sequence[str] = TYPES,
    iterations: int = 50,
    grid: str = "small",
    folds: int = 6,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
) -> dict[str, Any]:
    """Run the dry-run analysis on the embedding in ``path``.

    Parameters
    ----------
    path : str or Path
        A project with a trained embedding model, or an ``.npz`` with ``X``, ``y``,
        ``groups``.
    types : sequence of str
        Intervention types whose combinations (:func:`type_combinations`) are analysed.
    iterations, grid, folds, seed, progress, cluster
        As for :func:`hemalens.engine.embed.dryrun.dry_run`.
    out_dir : str or Path, optional
        Where ``dry_run_curves.png``, ``table_i.md`` and ``dry_run.json`` go.

    Returns
    -------
    dict
        ``{"best": [{"types", "params", "max_f1", "iterations_to_max"}], "source",
        "cells", "dim", "combinations", "files", "seconds", ...}``; the per-iteration curves
        are in ``dry_run.json`` when ``out_dir`` is given, not in the returned summary.

    Raises
    ------
    InputError
        Unreadable input, an embedding with NaN, one class or a class of one sample.
    """
    t0 = time.perf_counter()
    path = Path(path)
    X, y, groups, source = _load(path)
    combos = type_combinations(types)
    result = dry_run(X, y, groups, combos, grid=grid, iterations=iterations, folds=folds,
                     seed=seed, progress=progress, cluster=cluster)
    summary: dict[str, Any] = {k: v for k, v in result.items() if k != "curves"}
    summary.update(source=source, cells=int(X.shape[0]), dim=int(X.shape[1]),
                   combinations=[list(c) for c in combos], files=[])
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary["files"] = [str(p) for p in plot_dry_run(result, out)]
        (out / "table_i.md").write_text(table_i(result))
        (out / "dry_run.json").write_text(json.dumps(result, default=str, indent=1))
        summary["files"] += [str(out / "table_i.md"), str(out / "dry_run.json")]
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
