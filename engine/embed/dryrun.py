"""Dry-run analysis of latent interventions on a fixed embedding (paper 2 §III-F-2, §IV-A).

No network is trained: interventions are applied iteratively to one embedding, and after
each iteration an RBF-SVM trained on the training folds is scored (macro-F1) on the
validation fold, averaged over region-aware folds. This ranks intervention types and
strengths the way Fig. 4 and Table I of the paper do.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from hemalens.engine.embed.folds import region_folds
from hemalens.engine.embed.interventions import (
    CRITERIA,
    InterventionParams,
    check_embedding,
    iter_interventions,
)
from hemalens.engine.embed.svm import DEFAULT_GRID, fit_svm, grid_values, macro_f1
from hemalens.engine.errors import InputError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.scaleout import Cluster, open_executor

__all__ = [
    "GRIDS",
    "PAPER_COMBOS",
    "dry_run",
    "load_embeddings_npz",
    "plot_dry_run",
    "table_i",
]

# The six combinations the paper evaluates further (Table I).
PAPER_COMBOS: tuple[tuple[str, ...], ...] = (
    ("c",),
    ("c", "s"),
    ("c", "r"),
    ("c", "s", "os"),
    ("c", "s", "r"),
    ("c", "s", "os", "r"),
)

_ALL_CRITERIA = tuple((c, p) for p in (False, True) for c in CRITERIA)

GRIDS: dict[str, dict] = {
    # §III-F-2: λ_c = 2^x, x ∈ [-4, -1]; λ_r = 0.01·2^x, x ∈ [1, 5]; λ_s = 2^x, x ∈ [-2, 3];
    # γ ∈ {0, .25, .5, .75, 1}; every criterion, deterministic and probabilistic; 15
    # neighbours, then 1..15 for the winners. Thousands of settings: hours on a CPU.
    "paper": {
        "lambda_c": tuple(2.0**x for x in range(-4, 0)),
        "lambda_r": tuple(0.01 * 2.0**x for x in range(1, 6)),
        "lambda_s": tuple(2.0**x for x in range(-2, 4)),
        "gamma": (0.0, 0.25, 0.5, 0.75, 1.0),
        "criteria": _ALL_CRITERIA,
        "neighbours": (15,),
        "neighbours_second": tuple(range(1, 16)),
        "svm": DEFAULT_GRID,
    },
    # A weak and a strong contraction and shift, the paper's rotation strength, its nD
    # criterion only (deterministic mean-std*mean-all) and one extra neighbour count: 25
    # settings for the six paper combinations, enough to see what each strength does. Every
    # setting costs up to iterations × folds SVM fits, so a dry run on 5,000 × 256 takes
    # minutes, not seconds (benchmarks/bench_dryrun.py).
    "small": {
        "lambda_c": (0.125, 0.5),
        "lambda_r": (0.32,),
        "lambda_s": (1.0, 4.0),
        "gamma": (0.5,),
        "criteria": (("mean-std*mean-all", False),),
        "neighbours": (15,),
        "neighbours_second": (2,),
        "svm": {"C": (1.0, 10.0), "gamma_factor": (1.0,)},
    },
}

_GRID_KEYS = ("lambda_c", "lambda_r", "lambda_s", "gamma", "criteria", "neighbours")
_MAX_CACHE_POINTS = 8000  # N×N float32 distance cache up to ~256 MB


def _grid(grid: str | Mapping) -> dict:
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; choose one of {sorted(GRIDS)}")
        return dict(GRIDS[grid])
    g = dict(GRIDS["small"])
    g.update(grid)
    missing = [k for k in _GRID_KEYS if not g.get(k)]
    if missing:
        raise ValueError(f"grid has no values for {', '.join(missing)}")
    return g


def _combo_key(types: Sequence[str]) -> str:
    return ",".join(types)


def _settings(types: tuple[str, ...], g: Mapping) -> list[InterventionParams]:
    """All parameter settings of the grid that matter for ``types``."""
    ref = InterventionParams(types=types)
    axes = {
        "lambda_c": g["lambda_c"] if "c" in types else (ref.lambda_c,),
        "lambda_r": g["lambda_r"] if "r" in types else (ref.lambda_r,),
        "lambda_s": g["lambda_s"] if ("s" in types or "os" in types) else (ref.lambda_s,),
        "gamma": g["gamma"] if ("s" in types and "os" in types) else (ref.gamma,),
        "neighbours": g["neighbours"],
    }
    out = []
    for (crit, prob), *vals in itertools.product(g["criteria"], *axes.values()):
        kw = dict(zip(axes, vals, strict=True))
        out.append(InterventionParams(types=types, criterion=crit, probabilistic=prob, **kw))
    return out


def _uses_neighbours(types: Sequence[str]) -> bool:
    return any(t in types for t in ("s", "os", "r"))


class _FoldScorer:
    """Macro-F1 of fixed-parameter RBF-SVMs on every fold, from a cached distance matrix.

    Interventions move one class per iteration, so only those rows of the squared-distance
    matrix are recomputed; each fold's kernel is exp(-γ D) on slices of it, and the SVM is
    fitted on the precomputed kernel (identical to ``SVC(kernel="rbf")`` up to rounding).
    """

    def __init__(self, X, y, folds, svm_params=None, max_cache_points=_MAX_CACHE_POINTS,
                 n_jobs: int = 1):
        self.n_jobs = max(1, min(int(n_jobs), len(folds)))
        self.y = y
        self.folds = folds
        self.params = svm_params
        self.cache = X.shape[0] <= max_cache_points
        if self.cache:
            self.D0 = euclidean_distances(X, X, squared=True).astype(np.float32)
            self.D = self.D0.copy()
        self.X = X

    def select(self, grid: Mapping, seed: int) -> list[dict[str, float]]:
        """C and γ per fold by grid search on the training folds (as :func:`fit_svm`).

        With the cache, the search runs on precomputed kernels (one per γ; the same CV
        splits and macro-F1 scoring as ``fit_svm``), which is several times faster.
        """
        out = []
        for fold in self.folds:
            tr = fold.train
            if not self.cache:
                out.append(fit_svm(self.X[tr], self.y[tr], grid=grid, seed=seed).params)
                continue
            Cs, gammas = grid_values(grid, self.X[tr])
            counts = np.bincount(self.y[tr])
            n_cv = min(3, int(counts[counts > 0].min()))
            if len(Cs) * len(gammas) == 1 or n_cv < 2:
                out.append({"C": Cs[0], "gamma": gammas[0]})
                continue
            best = (-np.inf, Cs[0], gammas[0])
            Dtr = self.D[np.ix_(tr, tr)]
            for g in gammas:
                search = GridSearchCV(
                    SVC(kernel="precomputed"),
                    {"C": Cs},
                    scoring="f1_macro",
                    cv=StratifiedKFold(n_cv, shuffle=True, random_state=seed),
                ).fit(np.exp(-g * Dtr, dtype=np.float64), self.y[tr])
                if search.best_score_ > best[0]:
                    best = (search.best_score_, search.best_params_["C"], g)
            out.append({"C": float(best[1]), "gamma": float(best[2])})
        return out

    def reset(self, X: np.ndarray) -> None:
        self.X = X
        if self.cache:
            np.copyto(self.D, self.D0)

    def rescale(self, factor: float) -> None:
        """All points were scaled by ``factor`` about the origin: distances² by factor²."""
        if self.cache:
            self.D *= np.float32(factor * factor)

    def update(self, X: np.ndarray, rows: np.ndarray) -> None:
        self.X = X
        if not self.cache or rows.size == 0:
            return
        if rows.size > X.shape[0] // 2:
            self.D[:] = euclidean_distances(X, X, squared=True)
            return
        block = euclidean_distances(X[rows], X, squared=True).astype(np.float32)
        self.D[rows, :] = block
        self.D[:, rows] = block.T

    def _score(self, fold, p: Mapping[str, float]) -> float:
        tr, va = fold.train, fold.val
        if self.cache:
            Ktr = np.exp(-p["gamma"] * self.D[np.ix_(tr, tr)], dtype=np.float64)
            Kva = np.exp(-p["gamma"] * self.D[np.ix_(va, tr)], dtype=np.float64)
            m = SVC(C=p["C"], kernel="precomputed").fit(Ktr, self.y[tr])
            pred = m.predict(Kva)
        else:
            m = SVC(C=p["C"], gamma=p["gamma"], kernel="rbf").fit(self.X[tr], self.y[tr])
            pred = m.predict(self.X[va])
        return macro_f1(self.y[va], pred)

    def scores(self) -> np.ndarray:
        pairs = list(zip(self.folds, self.params, strict=True))
        if self.n_jobs == 1:
            return np.array([self._score(f, p) for f, p in pairs])
        # libsvm and numpy's exp release the GIL: threads share the distance cache
        with ThreadPoolExecutor(self.n_jobs) as pool:
            return np.array(list(pool.map(lambda fp: self._score(*fp), pairs)))


_SCORERS: dict[str, _FoldScorer] = {}


def dry_run_setting(shared: Mapping, params: Mapping, stage: int,
                    progress: Progress | None = None) -> dict:
    """Score one parameter setting over all iterations: the unit of work of :func:`dry_run`.

    Runs in-process (reusing the driver's scorer) or on a Dask worker, which builds one
    scorer per dry run and keeps it for the settings that follow. A setting's curve
    depends only on the shared data and its parameters, not on where it ran.

    Parameters
    ----------
    shared : mapping
        ``token``, ``X``, ``y``, ``splits``, ``svm_params``, ``base``, ``k``,
        ``iterations``, ``seed``, ``renormalise``, ``stop_at_perfect``.
    params : mapping
        :class:`InterventionParams` as a dict.
    stage : int
        1 (the grid) or 2 (the neighbour counts of a winner).
    progress : Progress, optional
        Cancellation only.

    Returns
    -------
    dict
        The setting's record (mean and std F1 per iteration, maximum, iterations to it).
    """
    X, y = shared["X"], shared["y"]
    scorer = _SCORERS.get(shared["token"])
    if scorer is None:
        from hemalens.engine.scaleout import worker_threads

        _SCORERS.clear()
        scorer = _FoldScorer(X, y, shared["splits"], n_jobs=worker_threads())
        scorer.params = shared["svm_params"]
        _SCORERS[shared["token"]] = scorer
    p = InterventionParams.from_dict(dict(params))
    k, base, renormalise = shared["k"], shared["base"], shared["renormalise"]
    stop_at_perfect = shared["stop_at_perfect"]
    masks = [np.flatnonzero(y == c) for c in range(k)]
    scorer.reset(X)
    curves = [base]
    if stop_at_perfect and base.mean() >= 1.0:
        return _record(p, curves, stage)
    emb = np.empty_like(X)
    for st in iter_interventions(
        X, y, p, shared["iterations"], rng=shared["seed"], n_classes=k,
        renormalise=renormalise,
    ):
        checkpoint(progress)
        st.embedding(out=emb)
        if renormalise == "scale" and st.scale != 1.0:
            # a common scale: rescale the cached distances, recompute only the moved class
            scorer.rescale(st.scale)
            rows = masks[st.chosen]
        else:
            rows = np.concatenate([masks[c] for c in np.flatnonzero(st.changed)])
        scorer.update(emb, rows)
        curves.append(scorer.scores())
        if stop_at_perfect and curves[-1].mean() >= 1.0:
            break
    return _record(p, curves, stage)


def _record(params: InterventionParams, curves: list[np.ndarray], stage: int) -> dict:
    f1 = np.array([c.mean() for c in curves])
    sd = np.array([c.std() for c in curves])
    best = int(np.argmax(f1))
    return {
        "params": params.to_dict(),
        "f1": [round(float(v), 6) for v in f1],
        "f1_std": [round(float(v), 6) for v in sd],
        "max_f1": float(f1[best]),
        "iterations_to_max": best,
        "pass": stage,
    }


def _rank_key(rec: Mapping) -> tuple[float, int]:
    # success = highest maximum score, then fewest iterations to reach it (§IV-A);
    # scores within 1e-4 count as equal
    return (-round(rec["max_f1"], 4), rec["iterations_to_max"])


def dry_run(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    type_combos: Sequence[Sequence[str]],
    *,
    grid: str | Mapping = "small",
    iterations: int = 50,
    folds: int = 6,
    seed: int = 0,
    progress: Progress | None = None,
    stop_at_perfect: bool = True,
    renormalise: str = "scale",
    n_jobs: int | None = None,
    cluster: Cluster | None = None,
) -> dict:
    """Score intervention types and strengths on a fixed embedding (paper 2 Fig. 4, Table I).

    For each combination of types and each parameter setting of the grid, interventions are
    applied iteratively to the embedding; after every iteration an RBF-SVM is fitted on the
    training folds and scored (macro-F1) on the validation fold, and the scores are averaged
    over the folds. Iteration 0 is the untouched embedding.

    The transforms are computed on *all* points with their labels, the validation points
    included (as in the paper's dry-run): the scores measure how strongly the interventions
    separate the classes, not how well a classifier generalises. A score of 1.0 is therefore
    reachable by construction, e.g. by contracting every class enough.

    To keep it tractable, C and γ of the SVM are chosen once per fold by grid search on the
    untransformed embedding (``grid["svm"]``, 3-fold CV on the training folds) and kept
    fixed over all iterations and settings; the RBF kernel is computed from a cached
    squared-distance matrix updated only for the classes that moved.

    Selection as in §III-F-2: the criterion Ω (with deterministic/probabilistic) is chosen
    jointly (highest mean over the combinations of each one's best max-F1, then fewest mean
    iterations), then per combination the strengths (λ, γ) by highest max-F1 (to 1e-4) and
    fewest iterations to reach it, then, for combinations that use neighbours (s, os, r),
    the neighbour count from ``grid["neighbours_second"]`` in a second pass. Neighbour
    counts above K - 1 act as K - 1 and are reported as such in ``neighbours_scores``.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        The embedding, e.g. of a triplet-loss network.
    y : ndarray, shape (N,)
        Class codes 0..K-1.
    groups : ndarray, shape (N,)
        Region of each sample (never split across folds).
    type_combos : sequence of sequences of str
        Combinations of "c", "s", "os", "r" to evaluate, e.g. :data:`PAPER_COMBOS`.
    grid : {"small", "paper"} or mapping
        A name in :data:`GRIDS` or a mapping overriding keys of the "small" grid.
    iterations : int
        Interventions per setting.
    folds : int
        Cross-validation folds (>= 3): round i validates on fold (i + 1) mod k.
    seed : int
        Seeds the folds, the SVM search and the probabilistic criterion.
    progress : Progress, optional
        Reports settings done; cancellation is checked every iteration.
    stop_at_perfect : bool
        Stop a setting once its mean validation F1 reaches 1.0 (its maximum; the curve then
        ends there).
    renormalise : str
        Shift renormalisation rule, see ``compute_interventions``.
    n_jobs : int, optional
        Folds scored at once (threads); default one per CPU core. Results do not depend on
        it.
    cluster : Cluster, optional
        Where the settings run (:mod:`hemalens.engine.scaleout`; a Dask worker scores the
        folds in one thread); default in-process. The result is identical.

    Returns
    -------
    dict
        JSON-ready: ``best`` (per combination: types, params, max_f1, iterations_to_max,
        neighbours_scores), ``curves`` (per combination key "c,s": one record per setting
        with the mean and std F1 per iteration), ``criterion`` (the joint choice) and
        ``settings`` (inputs, per-fold SVM parameters, baseline F1).
    """
    X, y, k = check_embedding(X, y)
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"groups must have shape {y.shape}, got {groups.shape}")
    combos = [InterventionParams(types=tuple(t)).types for t in type_combos]
    if not combos:
        raise ValueError("no type combinations to evaluate")
    combos = list(dict.fromkeys(combos))
    g = _grid(grid)
    splits = region_folds(y, groups, folds, seed=seed)
    n_present = int(np.count_nonzero(np.bincount(y, minlength=k)))

    if progress is not None:
        progress.set_status("choosing SVM parameters per fold")
    jobs = (os.cpu_count() or 1) if n_jobs is None else n_jobs
    scorer = _FoldScorer(X, y, splits, n_jobs=jobs)
    scorer.params = svm_params = scorer.select(g["svm"], seed)
    checkpoint(progress)
    base = scorer.scores()

    with open_executor(cluster) as executor:
        shared = {
            "token": uuid.uuid4().hex, "X": X, "y": y, "splits": splits, "svm_params": svm_params,
            "base": base, "k": k, "iterations": iterations, "seed": seed,
            "renormalise": renormalise, "stop_at_perfect": stop_at_perfect, "grid": grid,
            "folds": folds,
        }
        _SCORERS.clear()  # in-process settings reuse this scorer and its distance cache
        _SCORERS[shared["token"]] = scorer
        data = executor.share(shared)

        def run_all(settings: list[tuple[InterventionParams, int]]) -> Iterator[dict]:
            return executor.map(dry_run_setting,
                                [(data, p.to_dict(), stage) for p, stage in settings],
                                progress=progress, pass_cancel=True)

        if progress is not None:
            progress.set_status(f"dry run: {len(combos)} combination(s) "
                                f"({executor.cluster.describe()})")
        try:
            return _search(shared, combos, g, n_present, run_all, progress)
        finally:
            _SCORERS.clear()  # free the distance cache


def _search(shared: Mapping, combos: list, g: Mapping, n_present: int, run_all,
            progress: Progress | None) -> dict:
    """Both passes of :func:`dry_run` (the grid, then the winners' neighbour counts)."""
    X = shared["X"]
    base, svm_params = shared["base"], shared["svm_params"]
    iterations, seed = shared["iterations"], shared["seed"]
    renormalise, stop_at_perfect = shared["renormalise"], shared["stop_at_perfect"]
    grid = shared["grid"]
    first = {key: _settings(t, g) for t in combos for key in [_combo_key(t)]}
    n_second = len(g.get("neighbours_second", ()))
    total = sum(map(len, first.values())) + n_second * sum(_uses_neighbours(t) for t in combos)
    done = 0
    curves: dict[str, list[dict]] = {}
    order = [(key, params) for key, settings in first.items() for params in settings]
    for key in first:
        curves[key] = []
    for (key, _), rec in zip(order, run_all([(p, 1) for _, p in order]), strict=True):
        curves[key].append(rec)
        done += 1
        if progress is not None:
            progress.set_progress(done, total)

    # Ω jointly over the combinations, then strengths per combination
    crit_score = {}
    for crit in dict.fromkeys(tuple(c) for c in g["criteria"]):
        bests = []
        for key in curves:
            recs = [
                r
                for r in curves[key]
                if (r["params"]["criterion"], r["params"]["probabilistic"]) == crit
            ]
            bests.append(min(recs, key=_rank_key))
        crit_score[crit] = (
            -round(float(np.mean([r["max_f1"] for r in bests])), 4),
            float(np.mean([r["iterations_to_max"] for r in bests])),
        )
    criterion = min(crit_score, key=crit_score.__getitem__)

    # the neighbour counts of every combination's winner: the second pass, in one map
    winners: dict[str, dict] = {}
    tried_by: dict[str, dict[int, dict]] = {}
    second: list[tuple[str, int, InterventionParams]] = []
    for types in combos:
        key = _combo_key(types)
        recs = [
            r
            for r in curves[key]
            if (r["params"]["criterion"], r["params"]["probabilistic"]) == criterion
        ]
        winners[key] = min(recs, key=_rank_key)
        tried_by[key] = {min(winners[key]["params"]["neighbours"], n_present - 1): winners[key]}
        if _uses_neighbours(types):
            planned = set(tried_by[key])
            for n in g.get("neighbours_second", ()):
                if min(n, n_present - 1) in planned:
                    continue
                planned.add(min(n, n_present - 1))
                second.append((key, int(n), InterventionParams.from_dict(
                    {**winners[key]["params"], "neighbours": int(n)})))
    done_second = 0
    for (key, n, _), rec in zip(second, run_all([(p, 2) for *_, p in second]), strict=True):
        curves[key].append(rec)
        tried_by[key][min(n, n_present - 1)] = rec
        done_second += 1
        if progress is not None:
            progress.set_progress(done + done_second, total)
    best = []
    for types in combos:
        key = _combo_key(types)
        tried = tried_by[key]
        winner = min(tried.values(), key=_rank_key) if _uses_neighbours(types) else winners[key]
        best.append(
            {
                "types": list(types),
                "params": winner["params"],
                "max_f1": winner["max_f1"],
                "iterations_to_max": winner["iterations_to_max"],
                "neighbours_scores": {
                    str(n): [r["max_f1"], r["iterations_to_max"]]
                    for n, r in sorted(tried.items())
                },
            }
        )
    if progress is not None:
        progress.set_progress(total, total)
    return {
        "best": best,
        "curves": curves,
        "criterion": {"criterion": criterion[0], "probabilistic": bool(criterion[1])},
        "settings": {
            "grid": grid if isinstance(grid, str) else "custom",
            "iterations": int(iterations),
            "folds": int(shared["folds"]),
            "seed": int(seed),
            "n_samples": int(X.shape[0]),
            "dim": int(X.shape[1]),
            "n_classes": n_present,
            "stop_at_perfect": bool(stop_at_perfect),
            "renormalise": renormalise,
            "svm": svm_params,
            "baseline_f1": float(base.mean()),
            "baseline_f1_std": float(base.std()),
        },
    }


# --------------------------------------------------------------------------- reporting


def _strength(params: Mapping) -> float:
    t = params["types"]
    logs = []
    if "c" in t:
        logs.append(math.log2(params["lambda_c"]))
    if "r" in t:
        logs.append(math.log2(max(params["lambda_r"], 1e-6)))
    if "s" in t or "os" in t:
        logs.append(math.log2(max(params["lambda_s"], 1e-6)))
    return float(np.mean(logs)) if logs else 0.0


def plot_dry_run(result: Mapping, out_dir: str | PathLike[str]) -> list[Path]:
    """Draw the dry-run curves in the style of paper 2 Fig. 4.

    One panel per type combination; x: interventions applied, y: mean validation macro-F1.
    Colour: deterministic (reds) or probabilistic (blues) criterion, darker = stronger λ;
    line style: the criterion's logits. The selected setting is drawn thick in black.

    Parameters
    ----------
    result : mapping
        Output of :func:`dry_run`.
    out_dir : path
        Folder to write into (created if missing).

    Returns
    -------
    list of Path
        ``dry_run_curves.png`` and, when a second pass ran, ``dry_run_neighbours.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    styles = {"nearest": ":", "mean-std": "--", "mean-all": "-.", "mean-std*mean-all": "-"}
    keys = list(result["curves"])
    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    best = {_combo_key(b["types"]): b for b in result["best"]}
    for ax, key in zip(axes.flat, keys, strict=False):
        recs = [r for r in result["curves"][key] if r["pass"] == 1]
        strengths = np.array([_strength(r["params"]) for r in recs])
        lo, hi = (strengths.min(), strengths.max()) if recs else (0.0, 0.0)
        for r, s in zip(recs, strengths, strict=True):
            shade = 0.45 + 0.5 * ((s - lo) / (hi - lo) if hi > lo else 1.0)
            cmap = plt.get_cmap("Blues" if r["params"]["probabilistic"] else "Reds")
            ax.plot(r["f1"], color=cmap(shade), ls=styles[r["params"]["criterion"]], lw=1)
        b = best.get(key)
        if b is not None:
            for r in result["curves"][key]:
                if r["params"] == b["params"]:
                    ax.plot(r["f1"], color="black", lw=2)
                    break
        ax.set_title(key.replace(",", ", "))
        ax.set_xlabel("interventions")
        ax.set_ylabel("validation macro-F1")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles = [Line2D([], [], color="tab:red", label="deterministic")]
    handles.append(Line2D([], [], color="tab:blue", label="probabilistic"))
    handles += [Line2D([], [], color="grey", ls=ls, label=c) for c, ls in styles.items()]
    handles.append(Line2D([], [], color="black", lw=2, label="selected"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    paths = [out / "dry_run_curves.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    if any(len(b.get("neighbours_scores", {})) > 1 for b in result["best"]):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for b in result["best"]:
            ns = b.get("neighbours_scores", {})
            if len(ns) > 1:
                n = sorted(ns, key=int)
                ax.plot([int(v) for v in n], [ns[v][0] for v in n], "o-",
                        label=_combo_key(b["types"]))  # fmt: skip
        ax.set_xlabel("neighbours n")
        ax.set_ylabel("max validation macro-F1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "dry_run_neighbours.png")
        fig.savefig(paths[1], dpi=110)
        plt.close(fig)
    return paths


def table_i(result: Mapping) -> str:
    """Return the selected parameters as a Markdown table in the layout of paper 2 Table I.

    Columns: types, λ_c, λ_r, λ_s, γ, n (neighbours), i (iterations to the maximum) and the
    maximum mean validation macro-F1; "-" where a parameter does not apply.

    Parameters
    ----------
    result : mapping
        Output of :func:`dry_run`.

    Returns
    -------
    str
        The table (with a header line naming the chosen criterion).
    """
    crit = result.get("criterion", {})
    lines = []
    if crit:
        kind = "probabilistic" if crit.get("probabilistic") else "deterministic"
        lines.append(f"Criterion Ω: {crit.get('criterion')} ({kind})\n")
    lines.append("| types | λ_c | λ_r | λ_s | γ | n | i | max F1 |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for b in result["best"]:
        p, t = b["params"], b["types"]
        shift = "s" in t or "os" in t
        cells = [
            ", ".join(t),
            f"{p['lambda_c']:g}" if "c" in t else "-",
            f"{p['lambda_r']:g}" if "r" in t else "-",
            f"{p['lambda_s']:g}" if shift else "-",
            f"{p['gamma']:g}" if ("s" in t and "os" in t) else "-",
            str(p["neighbours"]) if _uses_neighbours(t) else "-",
            str(b["iterations_to_max"]),
            f"{b['max_f1']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- input


_KEYS = {
    "embeddings": ("embeddings", "X"),
    "labels": ("labels", "y"),
    "groups": ("groups", "regions"),
}


def load_embeddings_npz(
    path: str | PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an embedding for the dry-run from a ``.npz`` file.

    Keys: ``embeddings`` (or ``X``) float (N, d); ``labels`` (or ``y``) integer class codes
    (N,); ``groups`` (or ``regions``) the region of each sample (N,).

    Parameters
    ----------
    path : path
        The npz file.

    Returns
    -------
    X : ndarray of float64, shape (N, d)
    y : ndarray of int64, shape (N,)
    groups : ndarray, shape (N,)

    Raises
    ------
    InputError
        One line naming the file: unreadable, a key missing, wrong shapes or dtypes,
        NaN/inf, fewer than two classes or a class with a single sample.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            found = {}
            for name, options in _KEYS.items():
                key = next((o for o in options if o in z.files), None)
                if key is None:
                    raise InputError(path, f"missing key {' or '.join(map(repr, options))}")
                found[name] = z[key]
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable npz file ({err})") from None
    X, y, groups = found["embeddings"], found["labels"], found["groups"]
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1 or X.dtype.kind not in "fiu":
        raise InputError(
            path, f"embeddings must be a numeric (N, d) array, got {X.dtype} {X.shape}"
        )
    n = X.shape[0]
    if y.shape != (n,) or groups.shape != (n,):
        raise InputError(
            path, f"labels and groups must have shape ({n},), got {y.shape} and {groups.shape}"
        )
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise InputError(path, f"labels must be integer class codes, got {y.dtype}")
    try:
        X, y, _ = check_embedding(X, y)
    except ValueError as err:
        raise InputError(path, str(err)) from None
    return X, y, groups
