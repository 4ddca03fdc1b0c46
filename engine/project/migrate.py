"""Migrate a version-1 project (one HDF5 file) to the version-2 project folder.

Version 1 kept everything in one file, so every edit rewrote it. The migration builds the
folder beside the file (``.hl-<pid>-<n>.tmp``), checks that the labels it reconstructs
equal the file's, and then swaps the folder in under the file's name: the file is renamed
aside (the backup), the folder renamed into place, and the backup deleted only then. A
crash at any step leaves either the untouched version-1 file or the complete folder
(:func:`hemalens.engine.project.bundle.recover` finishes or undoes an interrupted swap).

What moves where::

    /meta, /inputs, /patches, /labels/classes, /cells but given_label -> cells.h5
    /cells/given_label + /labels/history       -> annotations.sqlite
    /models/<name>                             -> derived/models/<name>.h5
    /predictions/<model>                       -> derived/predictions/<model>.h5
    /explanations/<model>/<method>             -> one segment of computed rows
    /embeddings/<name>                         -> derived/embeddings/<name>.h5
    /models attr active                        -> setting active_model
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import bundle
from hemalens.engine.project.annotations import AnnotationStore
from hemalens.engine.project.atomic import (
    fsync_file,
    os_error_reason,
    remove_stale_temps,
    temp_path,
)
from hemalens.engine.project.bundle import ProjectPaths
from hemalens.engine.project.schema import SCHEMA_VERSION

__all__ = ["migrate_v1"]

_LIBVER = ("v110", "v110")


def _copy_group_to_root(src: h5py.Group, dst: h5py.File) -> None:
    """Copy a group's attributes and children to the root of another file."""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for key in src:
        src.copy(src[key], dst, name=key)


def _strings(ds: h5py.Dataset) -> list[str]:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return [str(v) for v in ds.asstr()[()].tolist()]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in ds[()]]


def _write_cells(source: Path, path: Path) -> None:
    """Copy the version-1 file byte for byte, then drop what now lives elsewhere.

    A sequential copy is fast; the original stays untouched as the backup. HDF5 keeps the
    space of the dropped groups inside the copy; derived data is small next to patches.
    """
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as dst:
        for name in ("models", "predictions", "explanations", "embeddings", "labels/history",
                     "cells/given_label"):
            if name in dst:
                del dst[name]
        meta = dst["meta"]
        meta.attrs["schema_version"] = SCHEMA_VERSION
        meta.attrs["migrated_from_schema"] = 1
        if "modified" in meta.attrs:
            del meta.attrs["modified"]
        if "schema_version" in meta:
            del meta["schema_version"]
        meta.create_dataset("schema_version", data=np.int64(SCHEMA_VERSION))
    fsync_file(path)


def _write_annotations(src: h5py.File, paths: ProjectPaths) -> None:
    """Rebuild the labels and history in SQLite and check them against the file."""
    original = np.asarray(src["cells/original_label"][()], np.int16)
    given = np.asarray(src["cells/given_label"][()], np.int16)
    store = AnnotationStore.open(paths.annotations, original)
    try:
        hist = src.get("labels/history")
        rows: list[tuple] = []
        if isinstance(hist, h5py.Group) and "cell_id" in hist:
            cols = {k: (_strings(hist[k]) if k in ("time", "user", "reason") else hist[k][()])
                    for k in ("cell_id", "old", "new", "time", "user", "reason") if k in hist}
            n = len(cols["cell_id"])
            rows = [tuple(cols[k][i] for k in ("cell_id", "old", "new", "time", "user", "reason"))
                    for i in range(n)]
        with store._write() as conn:
            # one action per run of rows written by one relabel call (same time, user, reason)
            action, key = None, None
            for cell, old, new, time, user, reason in rows:
                if (time, user, reason) != key:
                    key = (time, user, reason)
                    cur = conn.execute(
                        "INSERT INTO actions (op, time, user, reason, target, n_cells) "
                        "VALUES ('relabel', ?, ?, ?, NULL, 0)", (time, user or "unknown", reason))
                    action = cur.lastrowid
                conn.execute("INSERT INTO changes (action, cell_id, field, old, new) "
                             "VALUES (?, ?, 'label', ?, ?)",
                             (action, int(cell), int(old), int(new)))
            conn.execute("UPDATE actions SET n_cells = (SELECT COUNT(DISTINCT cell_id) FROM "
                         "changes WHERE changes.action = actions.id)")
            moved = np.flatnonzero(given != original)
            conn.executemany("INSERT INTO labels VALUES (?, ?)",
                             [(int(i), int(given[i])) for i in moved])
            models = src.get("models")
            active = models.attrs.get("active") if isinstance(models, h5py.Group) else None
            if active is not None:
                if isinstance(active, bytes):
                    active = active.decode("utf-8", "replace")
                conn.execute("INSERT INTO settings VALUES ('active_model', ?)", (str(active),))
        if not np.array_equal(store.current_labels(), given):
            raise ProjectError(paths.root, "migration check failed: labels differ")
    finally:
        store.close()


def _write_derived(src: h5py.File, paths: ProjectPaths) -> None:
    from hemalens.engine.explain.store import write_segment

    for kind in ("models", "predictions", "embeddings"):
        group = src.get(kind)
        if not isinstance(group, h5py.Group):
            continue
        for name, g in group.items():
            if not isinstance(g, h5py.Group):
                continue
            target = paths.item(kind, name)
            with h5py.File(target, "w", libver=_LIBVER) as dst:
                _copy_group_to_root(g, dst)
            fsync_file(target)
    expl = src.get("explanations")
    if isinstance(expl, h5py.Group):
        for model, mg in expl.items():
            if not isinstance(mg, h5py.Group):
                continue
            for method, g in mg.items():
                if not (isinstance(g, h5py.Group) and "computed" in g and "maps" in g):
                    continue
                ids = np.flatnonzero(g["computed"][()]).astype(np.int64)
                if ids.size == 0:
                    continue
                folder = paths.kind_dir("explanations") / bundle.item_filename(model) / \
                    bundle.item_filename(method)
                folder.mkdir(parents=True, exist_ok=True)
                attrs = {k: g.attrs[k] for k in ("model_created", "settings_json", "map_shape",
                                                  "created") if k in g.attrs}
                write_segment(folder, 1, ids, g["maps"][ids], g["scale"][ids],
                              g["target"][ids], attrs)


def _can_write(path: Path) -> bool:
    return os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)


def migrate_v1(path: str | os.PathLike[str]) -> None:
    """Turn the version-1 project file at ``path`` into a project folder of the same name.

    Parameters
    ----------
    path : str or PathLike
        A version-1 project file.

    Raises
    ------
    ProjectError
        The folder cannot be written (read-only: copy the file somewhere writable), the
        file is damaged, or the migration check failed; the file is then left as it was.
    """
    from hemalens.engine.project.store import create_folder_parts, write_marker

    path = Path(path)
    with bundle.folder_lock(path):
        bundle.recover(path)
        if path.is_dir():
            return  # another process migrated it while we waited
        if not _can_write(path):
            raise ProjectError(path, "is a version-1 project in a read-only place; copy it "
                                     "somewhere writable to upgrade it")
        remove_stale_temps(path.parent)  # e.g. the folder of a migration that was killed
        tmp = temp_path(path)
        try:
            tmp.mkdir()
            paths = ProjectPaths(tmp)
            _write_cells(path, paths.cells)
            with h5py.File(path, "r") as src:
                classes = _strings(src["labels/classes"])
                n_cells = int(src["cells/original_label"].shape[0])
                created = src["meta"].attrs.get("created", "")
                created = created.decode() if isinstance(created, bytes) else str(created)
                project_id = create_folder_parts(paths, classes, n_cells)
                _write_annotations(src, paths)
                _write_derived(src, paths)
            write_marker(paths, project_id, created)
            bundle.install_folder(tmp, path, replace=True)
        except ProjectError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProjectError(path, f"cannot upgrade the version-1 project: "
                                     f"{os_error_reason(err)}; it is unchanged") from err
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProjectError(path, f"damaged version-1 project, not upgraded: {err}") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
