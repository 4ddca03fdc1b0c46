"""Explanation maps cached in the project: ``derived/explanations/<model>/<method>/``.

Each write adds one segment file, ``seg-<n>.h5`` (plain HDF5, readable with h5py alone)::

    cell_id   int64 (k,)      sorted cells of this segment
    maps      float16 (k, H, W)  the map divided by its cell's ``scale``: values in [-1, 1]
    scale     float32 (k,)    max |map| of the cell (1 for an all-zero map); the map is
                              ``maps[i] * scale[i]``. Scaling keeps float16's 11-bit relative
                              precision for maps of any magnitude: raw gradients of order
                              1e-6 would otherwise fall into float16's subnormals.
    target    int16 (k,)      class the map explains (-1: none)
    attrs     model_created   the model's ``created`` stamp when the maps were computed (a
                              different stamp means another model under the same name, and
                              the cache is stale); settings_json (what the maps depend on,
                              e.g. the LIME seed); map_shape; created

A cell's map is in the newest segment that holds it. Writing costs the new maps only
(append-only, nothing rewritten), so a long "explain all" run can checkpoint every few
seconds; segments are merged in the background of later writes (LSM-style: four segments
of one size class become one of the next), so a cache holds at most a few dozen files.
A write whose model stamp, settings or map size differ from the stored segments replaces
the cache. Readers given ``model_created`` (and ``settings``) treat a stale cache as
absent. Segments are written atomically (temporary file + rename) under the project lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import bundle
from hemalens.engine.project.atomic import AtomicFile, ensure_free_space, fsync_dir
from hemalens.engine.project.bundle import ProjectPaths, project_lock
from hemalens.engine.project.derived import (
    build_h5_image,
    h5_error_reason,
    item_names,
    write_bytes,
)
from hemalens.engine.project.store import (
    Project,
    attr_text,
    check_group_name,
    iso_utc,
    locate_project,
    open_cells_h5,
    to_json,
)

__all__ = [
    "cached_cells",
    "cached_counts",
    "drop_explanations",
    "read_explanations",
    "write_explanations",
    "write_segment",
]

_SEG_RE = re.compile(r"^seg-(\d{6,})\.h5$")
# gzip level 1 as the patches use (readable anywhere); one chunk per map.
_MAP_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
#: Segments of one size class merged together (the LSM fan-in).
MERGE_FAN_IN = 4


def _n_cells(paths: ProjectPaths) -> tuple[int, tuple[int, int]]:
    with open_cells_h5(paths.root) as f:
        return int(f["cells/cell_id"].shape[0]), tuple(f["patches/images"].shape[1:3])


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


def _settings_text(settings: Mapping[str, Any] | None) -> str:
    return to_json(dict(settings or {}), "explanation settings")




def _folder(paths: ProjectPaths, model: str, meth: str) -> Path:
    return (paths.kind_dir("explanations") / bundle.item_filename(model)
            / bundle.item_filename(meth))


def _segments(folder: Path) -> list[tuple[int, Path]]:
    """Return the segment files of a cache, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    segs = []
    for name in names:
        m = _SEG_RE.match(name)
        if m:
            segs.append((int(m.group(1)), folder / name))
    return sorted(segs)


def _matches(attrs: Mapping[str, Any], model_created: str | None, settings_text: str | None,
             shape: tuple[int, int] | None = None) -> bool:
    """Whether a segment was made by this model version, with these settings and size."""
    if model_created is not None and attr_text(attrs.get("model_created")) != model_created:
        return False
    if settings_text is not None:
        try:
            stored = json.loads(attr_text(attrs.get("settings_json")) or "{}")
        except json.JSONDecodeError:
            return False
        if stored != json.loads(settings_text):
            return False
    if shape is not None and tuple(int(v) for v in attrs.get("map_shape", ())) != shape:
        return False
    return True


def write_segment(folder: Path, seq: int, ids: np.ndarray, scaled: np.ndarray,
                  scale: np.ndarray, targets: np.ndarray, attrs: Mapping[str, Any]) -> Path:
    """Write one segment file atomically (``ids`` sorted and distinct).

    Parameters
    ----------
    folder : pathlib.Path
        The cache folder of one model and method.
    seq : int
        Segment number (newer segments win).
    ids, scaled, scale, targets : numpy.ndarray
        Cell ids, maps / scale (float16), scales, targets.
    attrs : mapping
        ``model_created``, ``settings_json``, ``map_shape``, ``created``.

    Returns
    -------
    pathlib.Path
        The segment file.
    """
    path = folder / f"seg-{seq:06d}.h5"
    h, w = scaled.shape[1:]

    def fill(f: h5py.File) -> None:
        f.create_dataset("cell_id", data=np.asarray(ids, np.int64))
        f.create_dataset("maps", data=np.asarray(scaled, np.float16),
                         chunks=(1, h, w) if len(ids) else None,
                         **(_MAP_FILTER if len(ids) else {}))
        f.create_dataset("scale", data=np.asarray(scale, np.float32))
        f.create_dataset("target", data=np.asarray(targets, np.int16))
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["map_shape"] = np.asarray((h, w), np.int64)
        f["maps"].attrs["description"] = "float16 map / scale, one row per cell_id"
        f["scale"].attrs["description"] = "float32 max |map| per cell; map = maps*scale"

    try:
        _, image = build_h5_image(fill)
    except OSError as err:
        raise ProjectError(path, f"cannot save explanations: {h5_error_reason(err)}; the "
                                 "cache is unchanged") from err
    ensure_free_space(folder, len(image), path)
    with AtomicFile(path) as af:
        write_bytes(af.tmp, image, path)
    return path


def _read_segment(path: Path) -> h5py.File | None:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        return None  # merged away by a writer meanwhile
    except OSError as err:
        if not path.exists():
            return None
        raise ProjectError(path, f"damaged explanation cache ({err})") from err


def _level(rows: int) -> int:
    return int(math.log(max(rows, 1), MERGE_FAN_IN))


def _compact(folder: Path) -> None:
    """Merge runs of segments of one size class (caller holds the project lock).

    A run of :data:`MERGE_FAN_IN` consecutive segments whose row counts share a size class
    (``log4(rows)``) becomes one segment named after the newest of them, so "newest wins"
    still holds and each row is rewritten O(log n) times over the life of the cache.
    """
    while True:
        segs = _segments(folder)
        levels = []
        for _, path in segs:
            f = _read_segment(path)
            if f is None:
                return
            with f:
                levels.append(_level(int(f["cell_id"].shape[0])))
        start = None
        for i in range(len(segs) - MERGE_FAN_IN, -1, -1):  # newest runs first
            if len(set(levels[i:i + MERGE_FAN_IN])) == 1:
                start = i
                break
        if start is None:
            return
        run = segs[start:start + MERGE_FAN_IN]
        parts: list[tuple[np.ndarray, ...]] = []
        attrs: dict[str, Any] = {}
        for _, path in run:  # oldest first
            f = _read_segment(path)
            if f is None:
                return
            with f:
                attrs = {k: f.attrs[k] for k in ("model_created", "settings_json", "created")
                         if k in f.attrs}
                parts.append((f["cell_id"][()], f["maps"][()], f["scale"][()],
                              f["target"][()]))
        ids, maps, scale, tgt = (np.concatenate(c) for c in zip(*parts, strict=True))
        # the newest row of a cell wins: first occurrence in the reversed order
        last = ids.size - 1 - np.unique(ids[::-1], return_index=True)[1]
        write_segment(folder, run[-1][0], ids[last], maps[last], scale[last], tgt[last], attrs)
        for _, path in run[:-1]:  # their rows are all in the merged (newer) segment now
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fsync_dir(folder)


def write_explanations(
    project_path: str | PathLike[str] | Project,
    model_name: str,
    method: str,
    cell_ids: Any,
    maps: Any,
    targets: Any,
    *,
    model_created: str,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Store explanation maps of some cells in the project's cache.

    The rows of ``cell_ids`` are (over)written; other cached rows are kept. When the
    stored cache of this model and method was made by a model with another ``created``
    stamp, with other settings or with another map size, it is dropped first.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    model_name : str
        Name of the model.
    method : str
        Explanation method.
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
        The project is not readable or cannot be written; the cache is left as it was.
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

    paths = locate_project(project_path)
    n, _ = _n_cells(paths)
    ids = _cell_ids(cell_ids, n, unique=True)
    if ids.shape[0] != len(m):
        raise ValueError(f"{ids.shape[0]} cell_ids for {len(m)} maps")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    scale = np.abs(m[order]).reshape(len(m), -1).max(axis=1, initial=0.0)
    scale[scale == 0] = 1.0
    scaled = (m[order] / scale[:, None, None]).astype(np.float16)
    shape = (int(m.shape[1]), int(m.shape[2]))
    attrs = {"model_created": created, "settings_json": stext, "created": iso_utc()}
    folder = _folder(paths, model, meth)
    with project_lock(paths.root):
        segs = _segments(folder)
        if segs:
            f = _read_segment(segs[-1][1])
            stale = f is None
            if f is not None:
                with f:
                    stale = not _matches(f.attrs, created, stext, shape)
            if stale:  # another model version, settings or size: start the cache afresh
                _drop_folder(folder)
                segs = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ProjectError(folder, f"cannot write: {h5_error_reason(err)}") from err
        seq = segs[-1][0] + 1 if segs else 1
        write_segment(folder, seq, ids, scaled, scale.astype(np.float32), tg[order], attrs)
        _compact(folder)


def _drop_folder(folder: Path) -> None:
    """Remove a cache folder with one rename first (readers see all of it or none)."""
    if not folder.is_dir():
        return
    aside = folder.with_name(f".hl-{os.getpid()}-{os.urandom(4).hex()}.tmp")
    os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(folder.parent)


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
        The project.
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
        Not a readable project, or a damaged cache.
    ValueError
        Bad names or ids outside the project.
    """
    paths = locate_project(project_path)
    model = check_group_name(model_name, "model")
    meth = check_group_name(method, "method")
    stext = None if settings is None else _settings_text(settings)
    n, patch_shape = _n_cells(paths)
    ids = np.arange(n, dtype=np.int64) if cell_ids is None else _cell_ids(cell_ids, n,
                                                                        unique=False)
    uniq, inverse = np.unique(ids, return_inverse=True)
    maps: np.ndarray | None = None
    tgt = np.full(uniq.size, -1, np.int64)
    comp = np.zeros(uniq.size, bool)
    for _, path in _segments(_folder(paths, model, meth)):
        f = _read_segment(path)
        if f is None:
            continue
        with f:
            if not _matches(f.attrs, model_created, stext):
                continue
            try:
                seg_ids = f["cell_id"][()]
                hw = tuple(f["maps"].shape[1:])
                if maps is None or maps.shape[1:] != hw:
                    maps = np.full((uniq.size, *hw), np.nan, np.float32)
                    tgt[:] = -1
                    comp[:] = False
                pos = np.searchsorted(seg_ids, uniq)
                pos[pos >= seg_ids.size] = 0
                hit = seg_ids.size > 0
                found = np.flatnonzero(seg_ids[pos] == uniq) if hit else np.zeros(0, int)
                if found.size == 0:
                    continue
                rows = pos[found]  # increasing: both id lists are sorted
                ds = f["maps"]
                block = (ds[()][rows] if rows.size > ds.shape[0] // 4 else ds[rows]).astype(
                    np.float32) * f["scale"][()][rows][:, None, None]
                maps[found] = block
                tgt[found] = f["target"][()][rows]
                comp[found] = True
            except (KeyError, ValueError, OSError) as err:
                raise ProjectError(path, f"damaged explanation cache ({err})") from err
    if maps is None:
        maps = np.full((uniq.size, *patch_shape), np.nan, np.float32)
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
        Not a readable project, or a damaged cache.
    """
    paths = locate_project(project_path)
    model = check_group_name(model_name, "model")
    meth = check_group_name(method, "method")
    stext = None if settings is None else _settings_text(settings)
    return _cached(paths, model, meth, str(model_created), stext)


def _cached(paths: ProjectPaths, model: str, meth: str, created: str | None,
            stext: str | None) -> np.ndarray:
    parts = []
    for _, path in _segments(_folder(paths, model, meth)):
        f = _read_segment(path)
        if f is None:
            continue
        with f:
            if _matches(f.attrs, created, stext):
                parts.append(f["cell_id"][()])
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def cached_counts(project: str | PathLike[str] | Project) -> dict[str, int]:
    """Return ``{"model/method": cells cached}`` for every cache in the project."""
    paths = locate_project(project)
    out: dict[str, int] = {}
    for model in item_names(paths, "explanations"):
        mdir = paths.kind_dir("explanations") / bundle.item_filename(model)
        for entry in sorted(os.listdir(mdir)) if mdir.is_dir() else []:
            if entry.startswith("."):
                continue
            meth = bundle.item_name(entry)
            out[f"{model}/{meth}"] = int(_cached(paths, model, meth, None, None).size)
    return out


def drop_explanations(
    project_path: str | PathLike[str] | Project,
    model_name: str | None = None,
    method: str | None = None,
) -> int:
    """Remove cached explanation maps.

    Parameters
    ----------
    project_path : str, PathLike or Project
        The project.
    model_name : str, optional
        Only this model's caches; default every model's.
    method : str, optional
        Only this method's cache (of ``model_name``, or of every model).

    Returns
    -------
    int
        Number of (model, method) caches removed.

    Raises
    ------
    ProjectError
        Not a readable project, or it cannot be written.
    """
    model = None if model_name is None else check_group_name(model_name, "model")
    meth = None if method is None else check_group_name(method, "method")
    paths = locate_project(project_path)
    removed = 0
    with project_lock(paths.root):
        for mname in item_names(paths, "explanations"):
            if model is not None and mname != model:
                continue
            mdir = paths.kind_dir("explanations") / bundle.item_filename(mname)
            for entry in sorted(os.listdir(mdir)):
                if entry.startswith(".") or (meth is not None and bundle.item_name(entry) != meth):
                    continue
                _drop_folder(mdir / entry)
                removed += 1
            with contextlib.suppress(OSError):
                mdir.rmdir()  # only when empty
    return removed
