"""Derived data in the project folder: one HDF5 file per item, replaced whole.

Models (``derived/models/<name>.h5``), predictions (``derived/predictions/<model>.h5``)
and embeddings (``derived/embeddings/<name>.h5``) are each written to a temporary file in
their folder and renamed into place under the project's writer lock, so writing them costs
what they hold and never copies the patches, and a reader always sees a whole file: the
old one or the new one. Explanation caches use append-only segments
(:mod:`hemalens.engine.explain.store`).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from os import PathLike
from pathlib import Path
from typing import TypeVar

import h5py

from hemalens.engine.errors import ProjectError
from hemalens.engine.project import bundle
from hemalens.engine.project.atomic import (
    AtomicFile,
    ensure_free_space,
    fsync_dir,
    os_error_reason,
)
from hemalens.engine.project.bundle import ProjectPaths, project_lock
from hemalens.engine.project.store import Project, locate_project, one_line

T = TypeVar("T")

__all__ = ["build_h5_image", "delete_items", "item_names", "read_item", "write_bytes",
           "write_item"]

#: HDF5 format of derived files: readable by HDF5 >= 1.10, dense attributes for large JSON.
LIBVER = ("v110", "v110")


def item_names(project: str | PathLike[str] | Project | ProjectPaths, kind: str) -> list[str]:
    """Return the names of the stored items of one kind, sorted.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.
    kind : {"models", "predictions", "embeddings", "explanations"}
        Which folder. For ``explanations`` the names are the models with a cache.

    Returns
    -------
    list of str
    """
    paths = project if isinstance(project, ProjectPaths) else locate_project(project)
    folder = paths.kind_dir(kind)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ProjectError(folder, f"cannot list: {os_error_reason(err)}") from err
    names = []
    for e in entries:
        if e.name.startswith("."):
            continue  # temporary files of writers
        if kind == "explanations":
            if e.is_dir():
                names.append(bundle.item_name(e.name))
        elif e.name.endswith(".h5") and e.is_file():
            names.append(bundle.item_name(e.name[:-3]))
    return sorted(names)


@contextlib.contextmanager
def read_item(
    project: str | PathLike[str] | Project | ProjectPaths, kind: str, name: str
) -> Iterator[h5py.File | None]:
    """Open one derived file read-only (None when it does not exist).

    Raises
    ------
    ProjectError
        The file exists but cannot be read (damaged), naming it.
    """
    paths = project if isinstance(project, ProjectPaths) else locate_project(project)
    path = paths.item(kind, name)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        yield None
        return
    except OSError as err:
        if not path.exists():
            yield None
            return
        raise ProjectError(path, f"damaged {kind[:-1]} file: {one_line(err)}") from err
    with f:
        yield f


def write_item(
    project: str | PathLike[str] | Project | ProjectPaths,
    kind: str,
    name: str,
    write_fn: Callable[[h5py.File], T],
    *,
    check: Callable[[ProjectPaths], None] | None = None,
) -> T:
    """Write one derived file: fill a temporary file, then rename it into place.

    ``write_fn`` runs without the project lock (it may take long); ``check`` (e.g. "the
    model these predictions belong to still exists") and the rename run under it, so a
    writer that finds the project changed under it fails loudly instead of storing data
    that no longer fits.

    Parameters
    ----------
    project : str, PathLike, Project or ProjectPaths
        The project.
    kind : str
        ``models``, ``predictions`` or ``embeddings``.
    name : str
        The item (already validated with ``check_group_name``).
    write_fn : callable
        Called with the open temporary ``h5py.File`` (mode ``"w"``).
    check : callable, optional
        Called with the project's paths under the lock before the rename; raise to abort.

    Returns
    -------
    object
        What ``write_fn`` returned.

    Raises
    ------
    ProjectError
        The file cannot be written (full disk, read-only folder); nothing changed.
    """
    paths = project if isinstance(project, ProjectPaths) else locate_project(project)
    target = paths.item(kind, name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProjectError(target.parent, f"cannot write: {os_error_reason(err)}") from err
    try:
        result, image = build_h5_image(write_fn)
    except OSError as err:
        raise ProjectError(target, f"cannot save: {_h5_reason(err)}; the project is "
                                   "unchanged") from err
    ensure_free_space(target.parent, len(image), target)
    with AtomicFile(target) as af:
        write_bytes(af.tmp, image, target)
        with project_lock(paths.root):
            if check is not None:
                check(paths)
            af.commit()
    return result


def build_h5_image(write_fn: Callable[[h5py.File], T]) -> tuple[T, memoryview]:
    """Run ``write_fn`` on an HDF5 file built in memory; return its result and the bytes.

    HDF5 never touches the disk, so a full disk is met by :func:`write_bytes` with a
    plain ``OSError`` instead of an HDF5 file that cannot be closed.
    """
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver=LIBVER) as f:
        result = write_fn(f)
    return result, buf.getbuffer()


def write_bytes(path: Path, data: memoryview | bytes, what: Path) -> None:
    """Write ``data`` to ``path`` (a temporary file), as one line on a full disk."""
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as err:
        raise ProjectError(what, f"cannot save: {os_error_reason(err)}; the project is "
                                 "unchanged") from err


def delete_items(paths: ProjectPaths, kind: str, names: list[str]) -> None:
    """Remove derived items (files, or explanation folders); the caller holds the lock."""
    import shutil

    for name in names:
        if kind == "explanations":
            folder = paths.kind_dir(kind) / bundle.item_filename(name)
            if folder.is_dir():
                aside = folder.with_name(f".hl-{os.getpid()}-{os.urandom(4).hex()}.tmp")
                os.rename(folder, aside)  # one rename: readers see all of it or none
                shutil.rmtree(aside, ignore_errors=True)
            continue
        with contextlib.suppress(FileNotFoundError):
            paths.item(kind, name).unlink()
    fsync_dir(paths.kind_dir(kind))


def _h5_reason(err: OSError) -> str:
    text = str(err)
    if "No space left" in text or "errno = 28" in text:
        return "no space left on device"
    return os_error_reason(err) if err.errno else one_line(err)


def h5_error_reason(err: BaseException) -> str:
    """One-line reason of an h5py write failure (full disk recognised in HDF5's message)."""
    if isinstance(err, OSError):
        return _h5_reason(err)
    return one_line(err)
