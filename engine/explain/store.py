"""Explanation maps cached in the project file: ``/explanations/<model>/<method>``.

Layout (plain HDF5, readable with h5py alone; row = cell_id, ``N`` = cells in the project)::

    /explanations/<model>/<method>           one cache per model and method
        attrs  model_created  the model's ``created`` stamp (from its metadata) when the
                              maps were computed: a different stamp means another model
                              under the same name, and the cache is stale
               settings_json  JSON of the settings the maps depend on (e.g. the LIME seed)
               created        ISO 8601 UTC, first write of this cache
               modified       ISO 8601 UTC, last write
               map_shape      (H, W)
        maps      float16 (N, H, W), one chunk per cell, gzip 1 + shuffle, fill NaN:
                  the map divided by its cell's ``scale``, so values lie in [-1, 1]
        scale     float32 (N,)  max |map| of the cell (1 for an all-zero map); the map is
                  ``maps[i] * scale[i]``. Scaling keeps float16's 11-bit relative
                  precision for maps of any magnitude: raw gradients of order 1e-6 would
                  otherwise fall into float16's subnormals or flush to zero.
        computed  bool (N,)     True where the row holds a map
        target    int16 (N,)    class the map explains (-1: none)

Unwritten rows cost no space (HDF5 allocates a chunk only when it is written), so a cache
of a few cells in a large project stays small. Per-cell maps of LIME (piecewise constant
over superpixels) compress well; noisy gradient maps barely do.

Writing goes through :func:`~hemalens.engine.project.atomic.atomic_update` under
:func:`~hemalens.engine.project.atomic.path_lock`: the project is copied, the copy edited
and moved over the original, so a failure leaves it untouched. A write merges into the
cache (only the given rows change); a cache whose ``model_created``, settings or map size
differ from the new maps is dropped first. Readers given ``model_created`` (and
``settings``) treat a stale cache as absent. HDF5 does not give back the space of dropped
or overwritten maps until the file is repacked (e.g. ``h5repack``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project.atomic import atomic_update, path_lock
from hemalens.engine.project.store import (
    Project,
    attr_text,
    check_group_name,
    iso_utc,
    open_project_h5,
    to_json,
)
from hemalens.engine.project.store import project_path as path_of

__all__ = ["cached_cells", "drop_explanations", "read_explanations", "write_explanations"]

GROUP = "explanations"
# One chunk per cell: a cell is read or rewritten without touching its neighbours, and
# rows never written take no space. gzip level 1 as the patches use (readable anywhere).
_MAP_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
_ROW_CHUNK = 16384






def _n_cells(f: h5py.File) -> int:
    return int(f["cells/cell_id"].shape[0])


def _cell_ids(cell_ids: Any, n: int, *, unique: bool) -> np.ndarray:
    ids = np.asarray(cell_ids)
    if ids.ndim != 1:
        raise ValueError(f"cell_ids must be 1-D, got shape {ids.shape}")
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"cell_ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64)
    bad = ids[(ids < 0) | (ids >= n)]
    if bad.size:
        raise ValueError(f"no cell with id {int(bad[0])} (the project has {n} cells)")
    if unique and np.unique(ids).size != ids.size:
        raise ValueError("cell_ids has duplicates")
    return ids


def _runs(sorted_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Split increasing ids into contiguous runs ``(first_id, stop_id, offset)``."""
    if sorted_ids.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_ids) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [sorted_ids.size]))
    return [(int(sorted_ids[a]), int(sorted_ids[b - 1]) + 1, int(a))
            for a, b in zip(starts, stops, strict=True)]


def _settings_text(settings: Mapping[str, Any] | None) -> str:
    return to_json(dict(settings or {}), "explanation settings")




def _is_current(g: h5py.Group, model_created: str | None, settings_text: str | None) -> bool:
    """Whether a stored cache matches the model stamp and settings (None: not checked)."""
    if model_created is not None and attr_text(g.attrs.get("model_created")) != model_created:
        return False
    if settings_text is not None:
        try:
            stored = json.loads(attr_text(g.attrs.get("settings_json")) or "{}")
        except json.JSONDecodeError:
            return False
        return stored == json.loads(settings_text)
    return True


def _write_rows(g: h5py.Group, ids: np.ndarray, scaled: np.ndarray, scale: np.ndarray,
                targets: np.ndarray) -> None:
    """Write the rows of sorted ``ids`` (contiguous runs are written as slices)."""
    maps_ds, scale_ds, comp_ds, tgt_ds = g["maps"], g["scale"], g["computed"], g["target"]
    for first, stop, off in _runs(ids):
        sl = slice(off, off + stop - first)
        maps_ds[first:stop] = scaled[sl]
        scale_ds[first:stop] = scale[sl]
        tgt_ds[first:stop] = targets[sl]
        comp_ds[first:stop] = True


def _create_cache(parent: h5py.Group, method: str, n: int, shape: tuple[int, int]) -> h5py.Group:
    g = parent.create_group(method)
    h, w = shape
    g.create_dataset("maps", shape=(n, h, w), maxshape=(None, h, w), dtype=np.float16,
                     chunks=(1, h, w), fillvalue=np.float16(np.nan), **_MAP_FILTER)
    rows = {"chunks": (max(1, min(n, _ROW_CHUNK)),), "maxshape": (None,), "shape": (n,)}
    g.create_dataset("scale", dtype=np.float32, fillvalue=np.float32(np.nan), **rows)
    g.create_dataset("computed", dtype=bool, fillvalue=False, **rows)
    g.create_dataset("target", dtype=np.int16, fillvalue=np.int16(-1), **rows)
    g["maps"].attrs["description"] = "float16 map / scale per cell, row = cell_id"
    g["scale"].attrs["description"] = "float32 max |map| per cell; map = maps * scale"
    g["computed"].attrs["description"] = "bool, True where the row holds a map"
    g["target"].attrs["description"] = "int16 class the map explains, -1 = none"
    g.attrs["created"] = iso_utc()
    g.attrs["map_shape"] = np.asarray(shape, np.int64)
    return g


def write_explanations(
    project_path: str | PathLike[str],
    model_name: str,
    method: str,
    cell_ids: Any,
    maps: Any,
    targets: Any,
    *,
    model_created: str,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Store explanation maps of some cells in the project's cache, atomically.

    The rows of ``cell_ids`` are (over)written; other cached rows are kept. When the
    stored cache of this model and method was made by a model with another ``created``
    stamp, with other settings or with another map size, it is dropped first.

    Parameters
    ----------
    project_path : str or PathLike
        The project file.
    model_name : str
        Name of the model (``/explanations/<model_name>``).
    method : str
        Explanation method (``/explanations/<model_name>/<method>``).
    cell_ids : array_like of int
        ``(n,)`` distinct cell ids (rows of the project's cells).
    maps : array_like
        ``(n, H, W)`` finite maps; stored as float16 relative to each cell's max |map|.
    targets : array_like of int
        ``(n,)`` class each map explains (-1: none), int16 range.
    model_created : str
        The model's ``created`` stamp from its metadata (invalidates the cache on change).
    settings : dict, optional
        JSON-ready settings the maps depend on (e.g. ``{"seed": 0}``).

    Raises
    ------
    ValueError
        Bad names, ids outside the project or repeated, shapes that do not fit, NaN/inf
        maps, targets out of range, an empty ``model_created`` or settings that are not
        JSON serialisable; nothing is written.
    ProjectError
        The project is not readable or cannot be replaced; it is left as it was.
    """
    model = check_group_name(model_name, "model")
    meth = check_group_name(method, "method")
    created = str(model_created or "").strip()
    if not created:
        raise ValueError("model_created must be the model's 'created' stamp, got nothing")
    stext = _settings_text(settings)
    m = np.asarray(maps)
    if m.ndim != 3 or m.dtype.kind not in "biuf":
        raise ValueError(f"maps must be numeric (n, H, W), got shape {m.shape} and {m.dtype}")
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        bad = int((~np.isfinite(m)).reshape(len(m), -1).any(axis=1).sum())
        raise ValueError(f"maps has NaN or infinite values in {bad} cell(s)")
    tg = np.asarray(targets)
    if tg.shape != (len(m),) or (tg.size and tg.dtype.kind not in "iu"):
        raise ValueError(f"targets must be {len(m)} integers, got shape {tg.shape} ({tg.dtype})")
    if tg.size and (int(tg.min()) < -1 or int(tg.max()) > np.iinfo(np.int16).max):
        raise ValueError("targets must be -1 (none) or class codes in the int16 range")

    path = Path(project_path)
    with path_lock(path):
        with open_project_h5(path, "r") as f:
            n = _n_cells(f)
        ids = _cell_ids(cell_ids, n, unique=True)
        if ids.shape[0] != len(m):
            raise ValueError(f"{ids.shape[0]} cell_ids for {len(m)} maps")
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        scale = np.abs(m[order]).reshape(len(m), -1).max(axis=1, initial=0.0)
        scale[scale == 0] = 1.0
        scaled = (m[order] / scale[:, None, None]).astype(np.float16)
        tg16 = tg[order].astype(np.int16)
        shape = (int(m.shape[1]), int(m.shape[2]))

        def modify(tmp: Path) -> None:
            with h5py.File(tmp, "r+") as f:
                parent = f.require_group(GROUP).require_group(model)
                g = parent.get(meth)
                if isinstance(g, h5py.Group) and not (
                    _is_current(g, created, stext)
                    and tuple(int(v) for v in g.attrs.get("map_shape", ())) == shape
                    and "maps" in g
                ):
                    del parent[meth]  # stale: another model version, settings or size
                    g = None
                elif g is not None and not isinstance(g, h5py.Group):
                    del parent[meth]
                    g = None
                if g is None:
                    g = _create_cache(parent, meth, n, shape)
                for ds in ("maps", "scale", "computed", "target"):
                    if g[ds].shape[0] < n:  # the project gained cells since the cache began
                        g[ds].resize(n, axis=0)
                _write_rows(g, ids, scaled, scale.astype(np.float32), tg16)
                g.attrs["model_created"] = created
                g.attrs["settings_json"] = stext
                g.attrs["modified"] = iso_utc()
                f["meta"].attrs["modified"] = iso_utc()

        atomic_update(path, modify)


def _cache(f: h5py.File, path: Path, model: str, meth: str) -> h5py.Group | None:
    g = f.get(f"{GROUP}/{model}/{meth}")
    if g is None:
        return None
    if not isinstance(g, h5py.Group) or any(k not in g for k in ("maps", "computed", "target")):
        raise ProjectError(path, f"corrupt explanation cache /{GROUP}/{model}/{meth}")
    rows = {g[k].shape[0] for k in ("maps", "computed", "target")}
    if len(rows) != 1 or g["maps"].ndim != 3:
        raise ProjectError(path, f"corrupt explanation cache /{GROUP}/{model}/{meth}: "
                           "datasets of different lengths")
    return g


def read_explanations(
    project_path: str | PathLike[str] | Project,
    model_name: str,
    method: str,
    cell_ids: Any = None,
    *,
    model_created: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read cached explanation maps.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project (an open :class:`Project` is read from its path).
    model_name, method : str
        Which cache.
    cell_ids : array_like of int, optional
        Cells to read, any order, repeats allowed; default all cells.
    model_created : str, optional
        The model's current ``created`` stamp: a cache made by another version of the
        model counts as absent.
    settings : dict, optional
        The current settings: a cache made with other settings counts as absent.

    Returns
    -------
    maps : numpy.ndarray
        float32 ``(n, H, W)``; NaN rows where not computed. Without any (valid) cache,
        ``H, W`` are the project's patch size.
    targets : numpy.ndarray
        int64 ``(n,)``, -1 where not computed.
    computed : numpy.ndarray
        bool ``(n,)``.

    Raises
    ------
    ProjectError
        Not a readable project, or a corrupt cache.
    ValueError
        Bad names or ids outside the project.
    """
    path = path_of(project_path)
    model = check_group_name(model_name, "model")
    meth = check_group_name(method, "method")
    stext = None if settings is None else _settings_text(settings)
    with open_project_h5(path, "r") as f:
        n = _n_cells(f)
        ids = np.arange(n, dtype=np.int64) if cell_ids is None else _cell_ids(cell_ids, n,
                                                                            unique=False)
        g = _cache(f, path, model, meth)
        if g is not None and not _is_current(g, model_created, stext):
            g = None
        if g is None:
            shape = tuple(f["patches/images"].shape[1:3]) if "patches/images" in f else (0, 0)
            return (np.full((ids.size, *shape), np.nan, np.float32),
                    np.full(ids.size, -1, np.int64), np.zeros(ids.size, bool))
        h, w = g["maps"].shape[1:]
        uniq, inverse = np.unique(ids, return_inverse=True)
        stored = g["maps"].shape[0]  # shorter than n when cells were added after caching
        have = uniq[uniq < stored]
        maps = np.full((uniq.size, h, w), np.nan, np.float32)
        tgt = np.full(uniq.size, -1, np.int64)
        comp = np.zeros(uniq.size, bool)
        has_scale = "scale" in g
        for first, stop, off in _runs(have):
            sl = slice(off, off + stop - first)
            c = g["computed"][first:stop].astype(bool)
            block = g["maps"][first:stop].astype(np.float32)
            if has_scale:
                block *= g["scale"][first:stop].astype(np.float32)[:, None, None]
            block[~c] = np.nan
            maps[sl] = block
            tgt[sl] = np.where(c, g["target"][first:stop], -1)
            comp[sl] = c
    return maps[inverse], tgt[inverse], comp[inverse]


def cached_cells(
    project_path: str | PathLike[str] | Project,
    model_name: str,
    method: str,
    model_created: str,
    *,
    settings: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Return the cells whose maps are cached for this version of the model.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    model_name, method : str
        Which cache.
    model_created : str
        The model's current ``created`` stamp; a cache of another version counts as empty.
    settings : dict, optional
        When given, a cache made with other settings counts as empty too.

    Returns
    -------
    numpy.ndarray
        Sorted int64 cell ids.

    Raises
    ------
    ProjectError
        Not a readable project, or a corrupt cache.
    """
    path = path_of(project_path)
    model = check_group_name(model_name, "model")
    meth = check_group_name(method, "method")
    stext = None if settings is None else _settings_text(settings)
    with open_project_h5(path, "r") as f:
        g = _cache(f, path, model, meth)
        if g is None or not _is_current(g, str(model_created), stext):
            return np.zeros(0, np.int64)
        return np.flatnonzero(g["computed"][()]).astype(np.int64)


def drop_explanations(
    project_path: str | PathLike[str],
    model_name: str | None = None,
    method: str | None = None,
) -> int:
    """Remove cached explanation maps, atomically.

    Parameters
    ----------
    project_path : str or PathLike
        The project file.
    model_name : str, optional
        Only this model's caches; default every model's.
    method : str, optional
        Only this method's cache (of ``model_name``, or of every model).

    Returns
    -------
    int
        Number of (model, method) caches removed; 0 leaves the file as it was.

    Raises
    ------
    ProjectError
        Not a readable project, or it cannot be replaced.
    """
    model = None if model_name is None else check_group_name(model_name, "model")
    meth = None if method is None else check_group_name(method, "method")
    path = Path(project_path)

    def targets(f: h5py.File) -> list[str]:
        root = f.get(GROUP)
        if not isinstance(root, h5py.Group):
            return []
        out = []
        for mname, mg in root.items():
            if (model is not None and mname != model) or not isinstance(mg, h5py.Group):
                continue
            out += [f"{mname}/{k}" for k in mg if meth is None or k == meth]
        return out

    with path_lock(path):
        with open_project_h5(path, "r") as f:
            found = targets(f)
        if not found:
            return 0

        def modify(tmp: Path) -> None:
            with h5py.File(tmp, "r+") as f:
                root = f[GROUP]
                for key in targets(f):
                    del root[key]
                for mname in list(root):
                    if isinstance(root[mname], h5py.Group) and len(root[mname]) == 0:
                        del root[mname]
                f["meta"].attrs["modified"] = iso_utc()

        atomic_update(path, modify)
    return len(found)
