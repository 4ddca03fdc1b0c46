"""The project: :class:`ProjectWriter` creates one, :class:`Project` opens one.

A project is a folder (see :mod:`hemalens.engine.project.bundle`). Its imported data is
``cells.h5``, written once by :class:`ProjectWriter` (plain HDF5: numbers and UTF-8
strings only, no pickles)::

    /meta            attrs format, schema_version, created, hemalens_version, patch_kind,
                     settings_json, meta_json; dataset schema_version
    /inputs/<col>    one dataset per INPUT_COLUMNS column (strings: variable-length UTF-8)
    /cells/<col>     one resizable 1-D dataset per cell column (CELL_COLUMNS but
                     given_label, + extras)
    /patches/images  (N, S, S) float32/float16 in [0, 1] (phase) or (N, S, S, 3) uint8 (rgb)
    /patches/raw     (N, S, S) float32 raw phase, rad (phase only, optional)
    /labels/classes  class names at import; original_label codes index it

Labels, decisions and their history are in ``annotations.sqlite``
(:class:`~hemalens.engine.project.annotations.AnnotationStore`); labels change only
through :func:`hemalens.engine.project.labels.relabel` or the review session.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # registers the patch filter (bitshuffle+LZ4) with h5py; the one place
import numpy as np

from hemalens.engine import __version__
from hemalens.engine.errors import ProjectError
from hemalens.engine.project import bundle
from hemalens.engine.project.annotations import AnnotationStore
from hemalens.engine.project.atomic import (
    ensure_free_space,
    fsync_dir,
    fsync_file,
    os_error_reason,
    remove_stale_temps,
    temp_path,
)
from hemalens.engine.project.bundle import ProjectPaths
from hemalens.engine.project.schema import (
    CELL_COLUMNS,
    DERIVED_CELL_COLUMNS,
    FILE_FORMAT,
    INPUT_COLUMNS,
    LATER_CELL_COLUMNS,
    SCHEMA_VERSION,
)

__all__ = [
    "PATCH_KINDS",
    "Project",
    "ProjectWriter",
    "attr_json",
    "attr_text",
    "check_group_name",
    "iso_utc",
    "locate_project",
    "open_cells_h5",
    "project_path",
]

PATCH_KINDS = ("phase", "rgb")
#: Columns of :meth:`Project.history` (the label history).
HISTORY_COLUMNS: dict[str, str] = {
    "cell_id": "int64",
    "old": "int16",
    "new": "int16",
    "time": "str",
    "user": "str",
    "reason": "str",
}
_STR = h5py.string_dtype("utf-8")
_CELL_CHUNK = 16384  # rows per chunk of a cell column: 7 chunks for 100k cells, <=256 kB each
_SMALL_CHUNK = 1024  # inputs, classes, history
_FLUSH_ROWS = 2048  # buffer appends so per-frame calls don't each resize 25+ datasets
# Patch filter, measured with benchmarks/bench_project.py (5000 cells of 50x50, float16 images
# + float32 raw, 2 cores): gzip1+shuffle 65 MB, write 1.1 s, read 29 us/patch; gzip4 64 MB,
# 1.2 s; lzf 69 MB, 0.7 s (an h5py-only filter other HDF5 tools cannot read); none 75 MB,
# 0.2 s, 8 us. Noisy float mantissas barely compress; gzip level 1 is as small as level 4 and
# stays readable everywhere. float16 images (vs float32: 87.5 MB) err by <= 2**-12 in [0, 1],
# far below the images' noise; the raw phase stays float32.
# Issue 14, same benchmark side by side on the loaded 2-core machine: gzip1+shuffle 65.1 MB,
# write 3.55 s; bitshuffle+LZ4 (hdf5plugin) 65.1 MB, 1.19 s (3.0x), read 22 vs 38 us/patch;
# blosc-lz4 71.9 MB, 1.42 s. Bitshuffle+LZ4 is as small as gzip and the import stops being
# bound by compression. Other tools read it once they load the filter: in Python,
# `import hdf5plugin` before h5py opens the file (this module does it for HemaLens).
_PATCH_FILTER: dict[str, Any] = dict(hdf5plugin.Bitshuffle(cname="lz4"))
#: The filter of projects written before issue 14 (still read; benchmarks compare with it).
GZIP_PATCH_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": 1,
                                     "shuffle": True}
_COLUMN_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_LIBVER = ("v110", "v110")  # readable by HDF5 >= 1.10, with its faster chunk indexes


def iso_utc(when: datetime | None = None) -> str:
    """Format a time as ISO 8601 in UTC (``now`` when omitted; naive times are local).

    Parameters
    ----------
    when : datetime, optional
        The time.

    Returns
    -------
    str
        E.g. ``"2024-05-01T12:00:00.000+00:00"``.
    """
    when = datetime.now(UTC) if when is None else when
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def to_json(obj: Any, what: str) -> str:
    """Encode ``obj`` as JSON text for an HDF5 attribute (numpy values and paths allowed).

    Parameters
    ----------
    obj : object
        Dicts, lists, numbers, strings, None, numpy scalars/arrays, paths.
    what : str
        Name used in the error message.

    Returns
    -------
    str
        The JSON text (NaN allowed).

    Raises
    ------
    ValueError
        When ``obj`` holds something JSON cannot express.
    """

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, PathLike):
            return str(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    try:
        return json.dumps(obj, default=default, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be JSON serialisable: {err}") from err


def _default(name: str, dtype: np.dtype) -> Any:
    """Fill value of a cell column when a batch does not provide it."""
    if name in ("input_id", "given_label", "original_label"):
        return -1  # "none"
    if name == "qc_pass":
        return True  # no QC ran, so nothing was rejected
    return {"f": np.nan, "b": False, "S": b""}.get(dtype.kind, 0)


def _cast(what: str, values: Any, dtype: np.dtype, n: int | None) -> np.ndarray:
    """Convert a column to ``dtype`` without silent loss; ValueError naming the column."""
    a = np.asarray(values)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        want = f"({n},)" if n is not None else "1-D"
        raise ValueError(f"{what} has shape {a.shape}, expected {want}")
    k = dtype.kind
    if k == "S":
        if a.dtype.kind == "U":
            a = np.char.encode(a, "utf-8")
        if a.dtype.kind != "S":
            raise ValueError(f"{what} must hold strings, got {a.dtype}")
        if a.size and int(np.char.str_len(a).max()) > dtype.itemsize:
            raise ValueError(f"{what} has values longer than {dtype.itemsize} bytes")
        return a.astype(dtype)
    if a.size == 0:
        return np.zeros(0, dtype)
    if k == "b":
        if a.dtype.kind == "b":
            return a.copy()  # buffered until flush: never keep the caller's array
        if a.dtype.kind in "iu" and bool(np.isin(a, (0, 1)).all()):
            return a.astype(bool)
        raise ValueError(f"{what} must be boolean, got {a.dtype}")
    if k in "iu":
        if a.dtype.kind not in "biu":
            raise ValueError(f"{what} must be integers, got {a.dtype}")
        info = np.iinfo(dtype)
        if int(a.min()) < info.min or int(a.max()) > info.max:
            raise ValueError(f"{what} has values outside the {dtype} range")
        return a.astype(dtype)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric, got {a.dtype}")
    return a.astype(dtype)


def _create_column(
    group: h5py.Group, name: str, dtype: np.dtype, n: int, desc: str
) -> h5py.Dataset:
    ds = group.create_dataset(
        name,
        shape=(n,),
        maxshape=(None,),
        dtype=dtype,
        chunks=(_CELL_CHUNK,),
        fillvalue=_default(name, dtype),
        **_COLUMN_FILTER,
    )
    if desc:
        ds.attrs["description"] = desc
    return ds


def _write_small(group: h5py.Group, name: str, values: list, dtype: str) -> h5py.Dataset:
    """Write a small resizable column (strings as variable-length UTF-8)."""
    dt = _STR if dtype == "str" else np.dtype(dtype)
    data = np.array(values, dtype=object if dtype == "str" else dt).reshape(-1)
    return group.create_dataset(
        name, data=data, dtype=dt, maxshape=(None,), chunks=(_SMALL_CHUNK,)
    )


def _read_small(ds: h5py.Dataset) -> np.ndarray:
    """Read a column; strings come back as a numpy ``str`` array."""
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.array(ds.asstr()[()].tolist(), dtype=str).reshape(-1)
    return ds[()]


class ProjectWriter:
    """Create a new project folder at ``path`` atomically.

    Everything is written to a temporary folder beside ``path`` (``.hl-<pid>-<n>.tmp``)
    and moved into place only on successful :meth:`close`; on an exception (or
    ``Cancelled``) inside a ``with`` block the temporary folder is removed and anything at
    ``path`` is untouched.

    An existing project at ``path`` is replaced only when it holds no label edits or
    decisions, or with ``overwrite=True``; anything else there (a raw image, a CSV, a
    foreign folder) is never replaced without ``overwrite=True``.

    Parameters
    ----------
    path : str or PathLike
        Destination project folder (``<name>.hemalens`` by convention).
    patch_kind : {"phase", "rgb"}
        Normalised phase patches (float, [0, 1]) or RGB crops (uint8).
    patch_shape : tuple of int
        ``(S, S)``; for rgb also ``(S, S, 3)``.
    classes : list of str
        Initial class names (codes 0..k-1); more are added by :meth:`class_code`.
    settings : dict, optional
        Segmentation settings, stored as JSON.
    meta : dict, optional
        Free metadata, stored as JSON.
    normalisation : dict, optional
        How patches were normalised, stored as attributes of ``/patches/images``.
    image_dtype : {"float32", "float16"}
        Storage type of phase patches (read back as float32 either way).
    overwrite : bool
        Replace whatever is at ``path`` (the user's ``--force``).

    Raises
    ------
    ValueError
        Bad ``patch_kind``, ``patch_shape``, classes or non-JSON settings.
    ProjectError
        The destination cannot be written, or holds something that must not be replaced.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        patch_kind: str,
        patch_shape: tuple[int, ...],
        classes: Iterable[str] = (),
        settings: dict | None = None,
        meta: dict | None = None,
        normalisation: dict | None = None,
        image_dtype: str = "float16",
        overwrite: bool = False,
    ) -> None:
        if patch_kind not in PATCH_KINDS:
            raise ValueError(f"patch_kind must be one of {PATCH_KINDS}, got {patch_kind!r}")
        shape = tuple(int(s) for s in patch_shape)
        if patch_kind == "rgb" and len(shape) == 2:
            shape = (*shape, 3)
        ok = len(shape) == 2 if patch_kind == "phase" else len(shape) == 3 and shape[2] == 3
        if not ok or min(shape) < 1:
            raise ValueError(f"patch_shape {tuple(patch_shape)} does not fit {patch_kind} patches")
        if image_dtype not in ("float32", "float16"):
            raise ValueError(f"image_dtype must be 'float32' or 'float16', got {image_dtype!r}")
        settings_json = to_json(settings or {}, "settings")
        meta_json = to_json(meta or {}, "meta")
        norm_json = to_json(normalisation or {}, "normalisation")
        self._classes: list[str] = []
        for name in classes:
            self.class_code(name)

        self.path = Path(path)
        self.overwrite = bool(overwrite)
        self.patch_kind = patch_kind
        self.patch_shape = shape
        self._inputs: list[dict[str, Any]] = []
        self._columns: dict[str, np.dtype] = {
            k: np.dtype(v[0]) for k, v in CELL_COLUMNS.items() if k not in DERIVED_CELL_COLUMNS
        }
        self._batches: list[tuple[int, dict[str, np.ndarray]]] = []
        self._buf_images: list[np.ndarray] = []
        self._buf_raw: list[np.ndarray] = []
        self._buffered = 0
        self._written = 0
        self._has_raw: bool | None = None if patch_kind == "phase" else False
        self._closed = False
        self._created = iso_utc()

        check_replaceable(self.path, self.overwrite)
        if not self.path.parent.is_dir():
            raise ProjectError(path, f"folder {str(self.path.parent)!r} does not exist")
        remove_stale_temps(self.path.parent)  # left by writers that were killed
        self._tmp = temp_path(self.path)
        try:
            self._tmp.mkdir()
        except OSError as err:
            raise ProjectError(path, f"cannot write beside it: {os_error_reason(err)}") from err
        self._paths = ProjectPaths(self._tmp)
        try:
            self._h5 = h5py.File(self._paths.cells, "w", libver=_LIBVER)
            self._init_layout(settings_json, meta_json, norm_json, normalisation, image_dtype)
        except BaseException:
            self.discard()
            raise

    # -- layout ---------------------------------------------------------------------------
    def _init_layout(self, settings_json, meta_json, norm_json, normalisation, image_dtype):
        f = self._h5
        m = f.create_group("meta")
        now = self._created
        m.attrs.update(
            {
                "format": FILE_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created": now,
                "hemalens_version": __version__,
                "patch_kind": self.patch_kind,
                "settings_json": settings_json,
                "meta_json": meta_json,
            }
        )
        m.create_dataset("schema_version", data=np.int64(SCHEMA_VERSION))
        f.create_group("inputs")
        cells = f.create_group("cells")
        for name, (_, desc) in CELL_COLUMNS.items():
            if name not in DERIVED_CELL_COLUMNS:
                _create_column(cells, name, self._columns[name], 0, desc)
        patches = f.create_group("patches")
        dt = np.dtype(image_dtype if self.patch_kind == "phase" else "uint8")
        img = patches.create_dataset(
            "images",
            shape=(0, *self.patch_shape),
            maxshape=(None, *self.patch_shape),
            dtype=dt,
            chunks=(1, *self.patch_shape),  # one patch = one chunk: a random read is one inflate
            **_PATCH_FILTER,
        )
        img.attrs["patch_kind"] = self.patch_kind
        img.attrs["normalisation_json"] = norm_json
        for k, v in (normalisation or {}).items():
            if isinstance(v, (str, int, float, bool, np.generic)):
                img.attrs[str(k)] = v
        f.create_group("labels")

    # -- inputs ---------------------------------------------------------------------------
    @staticmethod
    def _input_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(fields) - set(INPUT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown input columns {unknown}; known: {list(INPUT_COLUMNS)}")
        out: dict[str, Any] = {}
        for key, value in fields.items():
            dtype = INPUT_COLUMNS[key][0]
            if dtype == "str":
                # a file name that is not valid UTF-8 (undecodable bytes arrive as lone
                # surrogates) is stored readable, with replacement characters
                text = "" if value is None else str(value)
                out[key] = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            elif dtype.startswith("float"):
                out[key] = np.nan if value is None else float(value)
            else:
                out[key] = int(value)
        return out

    def add_input(self, record: Mapping[str, Any]) -> int:
        """Add one row to the input table.

        Parameters
        ----------
        record : dict
            Values for :data:`INPUT_COLUMNS` keys; missing ones default to ``""``, NaN or 0
            (``status`` to ``"ok"``).

        Returns
        -------
        int
            The ``input_id`` to put in the cells of this input.
        """
        self._check_open()
        row: dict[str, Any] = {}
        for key, (dtype, _) in INPUT_COLUMNS.items():
            row[key] = "" if dtype == "str" else np.nan if dtype.startswith("float") else 0
        row["status"] = "ok"
        row.update(self._input_fields(record))
        self._inputs.append(row)
        return len(self._inputs) - 1

    def update_input(self, input_id: int, **fields: Any) -> None:
        """Change fields of an input row (e.g. ``status``, ``error``, ``n_frames``).

        Parameters
        ----------
        input_id : int
            As returned by :meth:`add_input`.
        **fields
            :data:`INPUT_COLUMNS` values.
        """
        self._check_open()
        if not 0 <= input_id < len(self._inputs):
            raise ValueError(f"no input with id {input_id}")
        self._inputs[input_id].update(self._input_fields(fields))

    # -- classes --------------------------------------------------------------------------
    def class_code(self, name: str) -> int:
        """Return the code of class ``name``, adding it if new.

        Parameters
        ----------
        name : str
            Class name (non-empty).

        Returns
        -------
        int
            Index into ``/labels/classes``.
        """
        name = str(name).strip()
        if not name:
            raise ValueError("class names must not be empty")
        if name not in self._classes:
            self._classes.append(name)
        return self._classes.index(name)

    @property
    def classes(self) -> list[str]:
        """Class names so far (index = code)."""
        return list(self._classes)

    @property
    def n_cells(self) -> int:
        """Rows appended so far."""
        return self._written + self._buffered

    # -- cells ----------------------------------------------------------------------------
    def append(
        self,
        cells: Mapping[str, Any],
        images: np.ndarray,
        raw: np.ndarray | None = None,
    ) -> None:
        """Append cells with their patches.

        Parameters
        ----------
        cells : dict of str to array
            1-D columns of equal length n: any subset of :data:`CELL_COLUMNS` (missing ones
            get defaults: labels and input_id -1, floats NaN, qc_pass True, qc_reason b"",
            other ints 0) plus extra numeric/bool columns. ``cell_id`` is assigned here
            (running row index); a given one is ignored.
        images : numpy.ndarray
            ``(n, *patch_shape)``: float in [0, 1] for phase, uint8 for rgb.
        raw : numpy.ndarray, optional
            ``(n, S, S)`` raw phase in rad (phase only). Give it with every batch or never.

        Raises
        ------
        ValueError
            Lengths, shapes or dtypes do not fit, label codes or input ids are unknown.
        """
        self._check_open()
        images = np.asarray(images)
        n = images.shape[0] if images.ndim else -1
        if images.shape != (n, *self.patch_shape):
            want = ", ".join(map(str, self.patch_shape))
            raise ValueError(f"images have shape {images.shape}, expected (n, {want})")
        batch: dict[str, np.ndarray] = {}
        cells = dict(cells)
        given = cells.pop("given_label", None)
        if given is not None:  # the label at import is the original; edits come later
            cells.setdefault("original_label", given)
        for name, values in cells.items():
            if name == "cell_id":
                continue
            if not name or "/" in name or name == ".":
                raise ValueError(f"invalid column name {name!r}")
            dtype = self._columns.get(name)
            if dtype is None:  # an extra column: its first batch fixes its dtype
                kind = np.asarray(values).dtype.kind
                if kind not in "biuf":
                    raise ValueError(f"extra column {name!r} must be numeric or bool")
                dtype = np.asarray(values).dtype
            batch[name] = _cast(f"cells[{name!r}]", values, dtype, n)
            self._columns.setdefault(name, dtype)
        codes = batch.get("original_label")
        if codes is not None and codes.size and (
            codes.min() < -1 or codes.max() >= len(self._classes)
        ):
            raise ValueError(f"cells labels have codes outside -1..{len(self._classes) - 1}")
        ids = batch.get("input_id")
        if ids is not None and ids.size and (ids.min() < -1 or ids.max() >= len(self._inputs)):
            raise ValueError("cells['input_id'] refers to inputs not added (call add_input first)")
        images = self._cast_images(images)
        raw_arr = self._cast_raw(raw, n)
        if n == 0:
            return
        self._batches.append((n, batch))
        self._buf_images.append(images)
        if raw_arr is not None:
            self._buf_raw.append(raw_arr)
        self._buffered += n
        if self._buffered >= _FLUSH_ROWS:
            self._flush()

    def _cast_images(self, images: np.ndarray) -> np.ndarray:
        dt = self._h5["patches/images"].dtype
        if self.patch_kind == "phase":
            if images.dtype.kind != "f":
                raise ValueError(f"phase images must be float in [0, 1], got {images.dtype}")
        elif images.dtype != np.uint8:
            if images.dtype.kind not in "iu" or (
                images.size and (images.min() < 0 or images.max() > 255)
            ):
                raise ValueError(f"rgb images must be uint8, got {images.dtype}")
        return images.astype(dt)  # a copy: the caller may reuse its array before the flush

    def _cast_raw(self, raw: np.ndarray | None, n: int) -> np.ndarray | None:
        # The first non-empty batch decides whether this project stores raw patches.
        if raw is None:
            if n and self._has_raw:
                raise ValueError("earlier batches had raw patches; give them with every batch")
            if n and self._has_raw is None:
                self._has_raw = False
            return None
        if self.patch_kind != "phase":
            raise ValueError("raw patches are only stored for phase projects")
        raw = np.asarray(raw)
        if raw.shape != (n, *self.patch_shape) or raw.dtype.kind != "f":
            raise ValueError(
                f"raw has shape {raw.shape} ({raw.dtype}), expected float {(n, *self.patch_shape)}"
            )
        if n and self._has_raw is False:
            raise ValueError("earlier batches had no raw patches; give them always or never")
        if n:
            self._has_raw = True
        return raw.astype(np.float32)  # a copy, as for images

    def _flush(self) -> None:
        if not self._buffered:
            return
        n0, n = self._written, self._buffered
        # An upper bound (uncompressed) of what this flush writes: HDF5 must never meet a
        # full disk (it cannot close such a file), so refuse before writing.
        nbytes = sum(a.nbytes for a in (*self._buf_images, *self._buf_raw))
        nbytes += n * sum(np.dtype(d).itemsize for d in self._columns.values())
        ensure_free_space(self._tmp, 2 * nbytes, self.path)
        cells = self._h5["cells"]
        for name, dtype in self._columns.items():
            if name == "cell_id":
                col = np.arange(n0, n0 + n, dtype=np.int64)
            else:
                fill = _default(name, dtype)
                col = np.concatenate(
                    [b[name] if name in b else np.full(k, fill, dtype) for k, b in self._batches]
                )
            ds = cells.get(name)
            if ds is None:  # new extra column; earlier rows read as its fill value
                ds = _create_column(cells, name, dtype, n0, "")
            ds.resize((n0 + n,))
            ds[n0:] = col
        for key, parts in (("images", self._buf_images), ("raw", self._buf_raw)):
            if not parts:
                continue
            if key not in self._h5["patches"]:
                self._create_raw(0)
            ds = self._h5["patches"][key]
            ds.resize((n0 + n, *self.patch_shape))
            ds[n0:] = np.concatenate(parts)
        self._batches, self._buf_images, self._buf_raw = [], [], []
        self._written += n
        self._buffered = 0

    def _create_raw(self, n: int) -> None:
        ds = self._h5["patches"].create_dataset(
            "raw",
            shape=(n, *self.patch_shape),
            maxshape=(None, *self.patch_shape),
            dtype=np.float32,
            chunks=(1, *self.patch_shape),
            **_PATCH_FILTER,
        )
        ds.attrs["units"] = "rad"

    # -- finishing ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"ProjectWriter for {self.path} is closed")

    def close(self) -> str:
        """Write everything and move the project folder into place.

        Returns
        -------
        str
            The final path.
        """
        if self._closed:
            return str(self.path)
        try:
            self._flush()
            ensure_free_space(self._tmp, 1024 * (len(self._inputs) + len(self._classes)),
                              self.path)
            f = self._h5
            if self.patch_kind == "phase" and "raw" not in f["patches"] and not self._written:
                self._create_raw(0)  # no cells yet: keep the layout complete
            for key, (dtype, desc) in INPUT_COLUMNS.items():
                ds = _write_small(f["inputs"], key, [r[key] for r in self._inputs], dtype)
                ds.attrs["description"] = desc
            _write_small(f["labels"], "classes", self._classes, "str")
            f.close()
            fsync_file(self._paths.cells)
            project_id = create_folder_parts(self._paths, self._classes, self.n_cells)
            write_marker(self._paths, project_id, self._created)
            with bundle.folder_lock(self.path):
                bundle.recover(self.path)
                check_replaceable(self.path, self.overwrite)
                bundle.install_folder(self._tmp, self.path, replace=True)
        except OSError as err:
            self.discard()
            raise ProjectError(self.path, f"cannot save the project: {os_error_reason(err)}; "
                                          "nothing was replaced") from err
        except BaseException:
            self.discard()
            raise
        self._closed = True
        return str(self.path)

    def discard(self) -> None:
        """Abandon the project: delete the temporary folder; ``path`` is untouched."""
        self._closed = True
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            try:
                h5.close()
            except Exception:  # noqa: BLE001 - already failing; the temp folder goes anyway
                pass
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> ProjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


README_TEXT = """HemaLens project (schema version {version})
=============================================

This folder is one HemaLens project: copy, back up and share the folder as a whole.

  hemalens-project.json  what this folder is (format, schema version, project id)
  cells.h5               the imported cells, written once: /cells/<column> (one row per
                         object, row = cell_id), /inputs/<column>, /patches/images,
                         /patches/raw, /labels/classes (class names; label codes index it)
  annotations.sqlite     SQLite: every label edit, the label history, review decisions
                         and sample sign-offs
  derived/               models, predictions, explanations, embeddings and 2-D maps
                         (HDF5), each file replaced whole when recomputed

The current label of a cell is /cells/original_label in cells.h5 unless the SQLite view
current_labels lists the cell:

  sqlite3 annotations.sqlite "SELECT cell_id, label FROM current_labels"
  sqlite3 annotations.sqlite "SELECT * FROM label_history"

or, with HemaLens, `hemalens export PROJECT out.csv` writes every cell with its current
label (given_label) and its predictions.
"""


def create_folder_parts(paths: ProjectPaths, classes: list[str], n_cells: int) -> str:
    """Write the parts of a new project folder beside its ``cells.h5`` (not the marker).

    The annotation database (the import's classes, no edits), the derived folders and
    the README.

    Returns
    -------
    str
        The new project id (for :func:`write_marker`).
    """
    project_id = AnnotationStore.create(paths.annotations, classes, n_cells)
    for kind in bundle.DERIVED_KINDS:
        paths.kind_dir(kind).mkdir(parents=True, exist_ok=True)
    (paths.root / bundle.README_FILE).write_text(
        README_TEXT.format(version=SCHEMA_VERSION), encoding="utf-8")
    return project_id


def write_marker(paths: ProjectPaths, project_id: str, created: str) -> None:
    """Write the marker that makes the folder a project, last, and flush the folder."""
    marker = {"format": FILE_FORMAT, "schema_version": SCHEMA_VERSION,
              "project_id": project_id, "created": created, "hemalens_version": __version__}
    paths.marker.write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    for name in (bundle.ANNOTATIONS_FILE, bundle.MARKER_FILE, bundle.README_FILE):
        fsync_file(paths.root / name)
    fsync_dir(paths.derived)
    fsync_dir(paths.root)


def _edits_in(path: Path) -> int:
    """Reviewer edits held by the project at ``path`` (0 when none or unreadable)."""
    import sqlite3

    try:
        if path.is_dir():
            db = path / bundle.ANNOTATIONS_FILE
            if not db.is_file():
                return 0
            conn = sqlite3.connect(db) if os.access(path, os.W_OK) else sqlite3.connect(
                f"{db.resolve().as_uri()}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM actions").fetchone()[0])
            finally:
                conn.close()
        with h5py.File(path, "r") as f:
            hist = f.get("labels/history/cell_id")
            return int(hist.shape[0]) if isinstance(hist, h5py.Dataset) else 0
    except Exception:  # noqa: BLE001 - unreadable: treated as holding nothing to lose
        return 0


def _is_v1_file(path: Path) -> bool:
    try:
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            meta = f.get("meta")
            fmt = attr_text(meta.attrs.get("format")) if isinstance(meta, h5py.Group) else None
            return fmt == FILE_FORMAT
    except Exception:  # noqa: BLE001 - unreadable or damaged: not something we recognise
        return False


def check_replaceable(path: str | PathLike[str], overwrite: bool) -> None:
    """Refuse to replace what must not be replaced by a new project at ``path``.

    A project without reviewer edits may be replaced; a project with edits, or any other
    file, only with ``overwrite``; a folder that is not a project never (``--force`` must
    not be able to wipe a folder of the user's).

    Raises
    ------
    ProjectError
        With the one-line reason.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_dir():
        if not bundle.is_project_folder(p):
            raise ProjectError(p, "is a folder that is not a HemaLens project; choose another "
                                  "output name")
    elif not _is_v1_file(p):
        if not overwrite:
            raise ProjectError(p, "exists and is not a HemaLens project; use --force to "
                                  "replace it")
        return
    edits = _edits_in(p)
    if edits and not overwrite:
        raise ProjectError(p, f"is a project holding {edits} reviewer edit(s); use --force to "
                              "replace it")


def locate_project(path: str | PathLike[str] | Project, *, migrate: bool = True) -> ProjectPaths:
    """Return the folder of the project at ``path``, ready to read.

    Finishes an interrupted replacement, migrates a version-1 project file to a folder
    (keeping a backup of the file until the migration is complete), and checks the marker.

    Parameters
    ----------
    path : str, PathLike or Project
        What the user named: the folder, a file inside it, or a version-1 ``.h5`` file.
    migrate : bool
        Migrate a version-1 file (else it is refused).

    Returns
    -------
    ProjectPaths

    Raises
    ------
    ProjectError
        Missing, foreign, damaged, or a schema newer than this HemaLens.
    """
    if isinstance(path, Project):
        return path.paths
    p = bundle.resolve_project(path)
    bundle.recover(p)
    if p.is_dir():
        bundle.read_marker(p)
        return ProjectPaths(p)
    if not p.exists():
        raise ProjectError(path, "no such project")
    _check_v1_file(p)  # a one-line reason for anything that is not a version-1 project
    if not migrate:
        raise ProjectError(path, "is a version-1 project file; open it once to upgrade it")
    from hemalens.engine.project.migrate import migrate_v1

    migrate_v1(p)
    bundle.read_marker(p)
    return ProjectPaths(p)


def _check_v1_file(p: Path) -> None:
    """Raise the one-line reason why ``p`` is not a readable version-1 project file."""
    size = p.stat().st_size
    if size == 0:
        raise ProjectError(p, "file is empty (0 bytes)")
    try:
        if not h5py.is_hdf5(p):
            raise ProjectError(p, "not a HemaLens project (neither a project folder nor an "
                                  "HDF5 project file)")
        f = h5py.File(p, "r")
    except PermissionError as err:
        raise ProjectError(p, "permission denied") from err
    except OSError as err:
        msg = str(err)
        if "truncated" in msg or "eof" in msg.lower():
            reason = f"file is truncated ({size} bytes; an interrupted save or copy?)"
        else:
            reason = f"corrupt HDF5 file ({msg.splitlines()[0] if msg else type(err).__name__})"
        raise ProjectError(p, reason) from err
    with f:
        meta = f.get("meta")
        fmt = attr_text(meta.attrs.get("format")) if isinstance(meta, h5py.Group) else None
        if fmt != FILE_FORMAT:
            raise ProjectError(p, "HDF5 file is not a HemaLens project (no /meta format "
                                  "attribute)")


def open_cells_h5(project: str | PathLike[str] | Project) -> h5py.File:
    """Open a project's imported data (``cells.h5``) read-only.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.

    Returns
    -------
    h5py.File
        Open read-only; close it (``with``).

    Raises
    ------
    ProjectError
        Not a readable project.
    """
    paths = locate_project(project)
    return _open_cells(paths)


def _open_cells(paths: ProjectPaths) -> h5py.File:
    cells = paths.cells
    if not cells.is_file():
        raise ProjectError(paths.root, f"damaged project: {bundle.CELLS_FILE} is missing")
    try:
        f = h5py.File(cells, "r")
    except PermissionError as err:
        raise ProjectError(cells, "permission denied") from err
    except OSError as err:
        msg = str(err)
        if "truncated" in msg or "eof" in msg.lower():
            reason = "damaged project: the cell data is truncated"
        else:
            reason = f"damaged project: corrupt cell data ({msg.splitlines()[0] if msg else err})"
        raise ProjectError(cells, reason) from err
    try:
        meta = f.get("meta")
        fmt = attr_text(meta.attrs.get("format")) if isinstance(meta, h5py.Group) else None
        if fmt != FILE_FORMAT:
            raise ProjectError(cells, "damaged project: the cell data has no format mark")
    except ProjectError:
        f.close()
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        f.close()
        raise ProjectError(cells, f"damaged project: {err}") from err
    return f


class Project:
    """An open project: the cell table and labels in memory, patches read on demand.

    Use :meth:`open`; close it (or use ``with``) to release the files. ``cells`` holds
    ``given_label`` as the annotation store gives it (original labels plus edits);
    :meth:`refresh_labels` re-reads it after edits made elsewhere.

    Attributes
    ----------
    path : pathlib.Path
        The project folder.
    paths : ProjectPaths
    n_cells : int
    patch_kind : str
        ``"phase"`` or ``"rgb"``.
    patch_shape : tuple of int
    classes : list of str
        Class names; ``cells["given_label"]`` holds indices into it (-1 = none).
    settings, meta, normalisation : dict
    cells : dict of str to numpy.ndarray
        The whole cell table (schema columns plus extras).
    inputs : dict of str to numpy.ndarray
        The input table (strings as ``str`` arrays).
    annotations : AnnotationStore
        The project's labels, decisions and sign-offs.
    read_only : bool
        Edits are refused (opened read-only, or the folder cannot be written).
    schema_version : int
    created, modified, hemalens_version : str
    """

    def __init__(self, paths: ProjectPaths, h5: h5py.File, mode: str) -> None:
        self.paths = paths
        self.path = paths.root
        self.mode = mode
        self._h5 = h5
        self.annotations: AnnotationStore | None = None
        self._load()

    @classmethod
    def open(cls, path: str | PathLike[str], mode: str = "r") -> Project:
        """Open a project.

        Parameters
        ----------
        path : str or PathLike
            The project folder (or a file in it, or a version-1 file, migrated first).
        mode : {"r", "r+"}
            ``"r+"`` allows edits through :attr:`annotations` (refused anyway when the
            folder cannot be written: see :attr:`read_only`).

        Returns
        -------
        Project
            The open project.

        Raises
        ------
        ProjectError
            Missing, foreign, damaged or newer project.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        paths = locate_project(path)
        if mode == "r+":
            bundle.clean_stale(paths.root)  # temporary files of writers that were killed
        f = _open_cells(paths)
        try:
            return cls(paths, f, mode)
        except ProjectError:
            f.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
            f.close()
            raise ProjectError(paths.root, f"damaged project: {one_line(err)}") from err

    def _load(self) -> None:
        f, path = self._h5, self.path
        marker = bundle.read_marker(path)
        cells_file = self.paths.cells
        kinds = {"meta": h5py.Group, "cells": h5py.Group, "inputs": h5py.Group,
                 "patches/images": h5py.Dataset, "labels/classes": h5py.Dataset}
        for name, kind in kinds.items():
            if not isinstance(f.get(name), kind):
                what = "missing" if name not in f else f"not an HDF5 {kind.__name__.lower()}"
                raise ProjectError(cells_file, f"damaged project: /{name} is {what}")
        attrs = f["meta"].attrs
        self.schema_version = int(marker["schema_version"])
        self.project_id = str(marker.get("project_id", ""))
        self.created = attr_text(attrs.get("created")) or ""
        self.hemalens_version = attr_text(attrs.get("hemalens_version")) or ""
        self.patch_kind = attr_text(attrs.get("patch_kind")) or ""
        if self.patch_kind not in PATCH_KINDS:
            raise ProjectError(cells_file, f"damaged project: unknown patch kind "
                                           f"{self.patch_kind!r}")
        try:
            self.settings: dict = attr_json(attrs, "settings_json", {})
            self.meta: dict = attr_json(attrs, "meta_json", {})
        except ValueError as err:
            raise ProjectError(cells_file, f"damaged project: {err}") from None
        classes_ds = f["labels/classes"]
        if classes_ds.ndim != 1 or not (h5py.check_string_dtype(classes_ds.dtype)
                                        or classes_ds.dtype.kind in "SU"):
            raise ProjectError(cells_file, "damaged project: the class names are not text")
        imported = _read_small(classes_ds).tolist()
        if len(set(imported)) != len(imported) or any(not c.strip() for c in imported):
            raise ProjectError(cells_file, "damaged project: empty or repeated class names")
        cells: dict[str, np.ndarray] = {}
        for name, ds in f["cells"].items():
            if isinstance(ds, h5py.Dataset) and ds.ndim == 1 and name not in DERIVED_CELL_COLUMNS:
                cells[name] = ds[()]
        stored = [c for c in CELL_COLUMNS if c not in DERIVED_CELL_COLUMNS]
        n_rows = len(cells["cell_id"]) if "cell_id" in cells else 0
        for name in LATER_CELL_COLUMNS:
            if name not in cells:  # written before the column existed
                cells[name] = np.full(n_rows, np.nan, CELL_COLUMNS[name][0])
        missing = [c for c in stored if c not in cells]
        if missing:
            raise ProjectError(cells_file, f"damaged project: cell columns {missing} are "
                                           "missing")
        for name in stored:
            want = np.dtype(CELL_COLUMNS[name][0]).kind
            got = cells[name].dtype.kind
            ok = got in {"f": "fiu", "i": "iu", "u": "iu", "b": "biu", "S": "SU"}[want]
            if not ok:
                raise ProjectError(cells_file, f"damaged project: cell column {name!r} holds "
                                               f"{cells[name].dtype}, not {CELL_COLUMNS[name][0]}")
            if want != "S" and got != want:
                cells[name] = cells[name].astype(CELL_COLUMNS[name][0])
        lengths = {len(v) for v in cells.values()}
        if len(lengths) != 1:
            raise ProjectError(cells_file, "damaged project: cell columns differ in length")
        self.n_cells = lengths.pop()
        original = np.asarray(cells["original_label"], np.int16)
        if original.size and (original.min() < -1 or original.max() >= len(imported)):
            raise ProjectError(cells_file, "damaged project: label codes outside the class "
                                           "list")
        self.annotations = AnnotationStore.open(
            self.paths.annotations, original, read_only=self.mode == "r",
            project_id=self.project_id or None,
        )
        self.classes: list[str] = self.annotations.classes()
        if self.classes[: len(imported)] != imported:
            raise ProjectError(self.paths.annotations, "annotation classes disagree with the "
                                                       "imported class list")
        cells["given_label"] = self.annotations.current_labels()
        # Schema columns in schema order, then extras (alphabetical, as HDF5 lists them).
        self.cells = {c: cells.pop(c) for c in CELL_COLUMNS} | cells
        inputs = {n: _read_small(d) for n, d in f["inputs"].items() if isinstance(d, h5py.Dataset)}
        self.inputs: dict[str, np.ndarray] = {
            c: inputs.pop(c) for c in INPUT_COLUMNS if c in inputs
        } | inputs
        n_inputs = len(self.inputs.get("file", []))
        ids = self.cells["input_id"]
        if ids.size and (ids.min() < -1 or ids.max() >= n_inputs):
            raise ProjectError(cells_file, "damaged project: cells refer to inputs that the "
                                           "input table does not hold")
        self._images: h5py.Dataset = f["patches/images"]
        raw = f["patches"].get("raw")
        self._raw: h5py.Dataset | None = raw if isinstance(raw, h5py.Dataset) and len(raw) else None
        if self._images.shape[0] != self.n_cells:
            raise ProjectError(
                cells_file,
                f"damaged project: {self._images.shape[0]} patches for {self.n_cells} cells"
            )
        self.patch_shape: tuple[int, ...] = tuple(self._images.shape[1:])
        good_shape = len(self.patch_shape) == (2 if self.patch_kind == "phase" else 3)
        if not good_shape or min(self.patch_shape, default=0) < 1 or max(self.patch_shape) > 4096:
            raise ProjectError(cells_file, f"damaged project: patches of shape "
                                           f"{self.patch_shape} for {self.patch_kind} cells")
        try:
            self.normalisation: dict = attr_json(self._images.attrs, "normalisation_json", {})
        except ValueError as err:
            raise ProjectError(cells_file, f"damaged project: {err}") from None
        self._out_dtype = np.dtype(np.float32 if self.patch_kind == "phase" else np.uint8)

    @property
    def read_only(self) -> bool:
        """Whether edits are refused."""
        return self.annotations is None or self.annotations.read_only

    @property
    def modified(self) -> str:
        """When the project last changed on disk (ISO 8601 UTC): edits or derived data."""
        stamps = []
        db = self.paths.annotations
        for f in (db, db.with_name(db.name + "-wal")):
            with contextlib.suppress(OSError):
                stamps.append(f.stat().st_mtime)
        for folder, _, files in os.walk(self.paths.derived):
            for name in files:
                with contextlib.suppress(OSError):
                    stamps.append((Path(folder) / name).stat().st_mtime)
        created = datetime.fromisoformat(self.created) if self.created else None
        if not stamps:
            return self.created
        newest = datetime.fromtimestamp(max(stamps), UTC)
        return iso_utc(max(newest, created) if created else newest)

    # -- patches --------------------------------------------------------------------------
    def _index(self, i: int) -> int:
        i = operator.index(i)
        if not 0 <= i < self.n_cells:
            raise IndexError(f"cell {i} out of range 0..{self.n_cells - 1}")
        return i

    def image(self, i: int) -> np.ndarray:
        """Return one patch: float32 ``(S, S)`` in [0, 1] (phase) or uint8 ``(S, S, 3)`` (rgb).

        Parameters
        ----------
        i : int
            Cell id (row).

        Returns
        -------
        numpy.ndarray
            The patch.

        Raises
        ------
        ProjectError
            The patch's bytes are damaged (naming ``cells.h5`` and the cell).
        """
        i = self._index(i)
        with self._reading(f"the patch of cell {i}"):
            return self._images[i].astype(self._out_dtype, copy=False)

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Turn HDF5 read errors of damaged bytes into a one-line ProjectError."""
        try:
            yield
        except (OSError, RuntimeError) as err:
            raise ProjectError(self.paths.cells,
                               f"damaged project: cannot read {what} ({one_line(err)})") from err

    def images(self, idx: Any) -> np.ndarray:
        """Return several patches in the order asked (any order, repeats allowed).

        Parameters
        ----------
        idx : array_like of int or bool mask
            Cell ids, or a mask over all cells.

        Returns
        -------
        numpy.ndarray
            ``(len(idx), *patch_shape)``.
        """
        return self._read_many(self._images, idx)

    def _read_many(self, ds: h5py.Dataset, idx: Any) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (self.n_cells,):
                raise ValueError(f"mask has shape {idx.shape}, expected ({self.n_cells},)")
            idx = np.flatnonzero(idx)
        if idx.dtype.kind not in "iu":
            if idx.size:
                raise ValueError(f"cell ids must be integers, got {idx.dtype}")
            idx = idx.astype(np.int64)
        idx = idx.reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_cells):
            raise IndexError(f"cell ids out of range 0..{self.n_cells - 1}")
        uniq, inv = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq), *self.patch_shape), dtype=self._out_dtype)
        # One h5py read per run of consecutive ids (a slice), not one per id.
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        for s, e in zip(np.r_[0, breaks], np.r_[breaks, len(uniq)], strict=True):
            if e > s:
                with self._reading(f"the patches of cells {uniq[s]}..{uniq[e - 1]}"):
                    ds.read_direct(out, np.s_[uniq[s] : uniq[e - 1] + 1], np.s_[s:e])
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return out
        return out[inv.reshape(-1)]

    def raw(self, i: int) -> np.ndarray | None:
        """Return one raw phase patch (float32, rad), or None when the project has none.

        Parameters
        ----------
        i : int
            Cell id (row).

        Returns
        -------
        numpy.ndarray or None
            ``(S, S)`` float32.
        """
        i = self._index(i)
        if self._raw is None:
            return None
        with self._reading(f"the raw phase of cell {i}"):
            return self._raw[i].astype(np.float32, copy=False)

    # -- labels ---------------------------------------------------------------------------
    def label_names(self, codes: Any = None) -> np.ndarray:
        """Map label codes to class names (``""`` for -1).

        Parameters
        ----------
        codes : array_like of int, optional
            Codes; default the current ``given_label`` column.

        Returns
        -------
        numpy.ndarray
            ``str`` array of the same shape.
        """
        codes = self.cells["given_label"] if codes is None else np.asarray(codes)
        if codes.size and (codes.min() < -1 or codes.max() >= len(self.classes)):
            raise ValueError(f"label codes outside -1..{len(self.classes) - 1}")
        names = np.array([*self.classes, ""], dtype=str)  # code -1 picks the trailing ""
        return names[codes.astype(np.intp)]

    def history(self) -> dict[str, np.ndarray]:
        """Return the label history (one row per changed cell, oldest first).

        Returns
        -------
        dict of str to numpy.ndarray
            ``cell_id`` int64, ``old``/``new`` int16 codes (-1 = none), ``time`` ISO 8601
            UTC, ``user``, ``reason``, ``op`` (str).
        """
        rows = self._store().history()
        keep = rows["field"] == "label"
        return {k: rows[k][keep] for k in (*HISTORY_COLUMNS, "op")}

    @property
    def history_rows(self) -> int:
        """Number of rows in the label history."""
        return self._store().label_history_rows()

    def decisions(self) -> np.ndarray:
        """Return every cell's review decision code (index into ``DECISIONS``)."""
        return self._store().current_decisions()

    def relabel(
        self,
        cell_ids: Any,
        new_label: str | None,
        *,
        user: str,
        reason: str = "",
        when: datetime | None = None,
    ) -> int:
        """Relabel through :func:`~hemalens.engine.project.labels.relabel`, then refresh.

        Parameters
        ----------
        cell_ids, new_label, user, reason, when
            As for :func:`~hemalens.engine.project.labels.relabel`.

        Returns
        -------
        int
            Number of cells whose label changed.
        """
        from hemalens.engine.project.labels import relabel  # labels imports this module

        try:
            return relabel(self, cell_ids, new_label, user=user, reason=reason, when=when)
        finally:
            self.refresh_labels()

    def refresh_labels(self) -> None:
        """Re-read the classes and current labels from the annotation store."""
        store = self._store()
        self.classes = store.classes()
        self.cells["given_label"] = store.current_labels()

    def reload(self) -> None:
        """Re-open the project from disk (e.g. after it was replaced) and reload its tables."""
        self.close()
        self.paths = locate_project(self.path)
        self._h5 = _open_cells(self.paths)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _store(self) -> AnnotationStore:
        if self.annotations is None:
            raise ProjectError(self.path, "project is closed")
        return self.annotations

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Release the files."""
        if self.annotations is not None:
            self.annotations.close()
            self.annotations = None
        if self._h5:
            self._h5.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return f"Project({str(self.path)!r}, {self.n_cells} cells, {self.patch_kind})"


def one_line(err: BaseException) -> str:
    """Return ``err`` as one line of text (type name when it has no message)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


# -- helpers shared by the modules that keep derived data in the project (models,
# predictions, explanations, embeddings)


def project_path(project: str | PathLike[str] | Project) -> Path:
    """Return the file path of a project given as a path or an open :class:`Project`.

    Parameters
    ----------
    project : str, PathLike or Project
        The project.

    Returns
    -------
    pathlib.Path
        Its path.
    """
    return project.path if isinstance(project, Project) else Path(project)


def check_group_name(value: str, what: str) -> str:
    """Validate a name a user chooses for stored data (a model name, a method).

    The name becomes a file name inside the project (percent-encoded where a file system
    would not take a character), so it is kept short and printable.

    Parameters
    ----------
    value : str
        The name; surrounding white space is removed.
    what : str
        What it names, for the message (``"model"``).

    Returns
    -------
    str
        The stripped name.

    Raises
    ------
    ValueError
        Empty, ``.``/``..``, containing ``/`` or control characters, or over 100 characters.
    """
    name = str(value).strip()
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid {what} name {value!r} (non-empty, no '/')")
    if len(name) > 100 or any(not ch.isprintable() for ch in name):
        raise ValueError(f"invalid {what} name {value!r} (at most 100 printable characters)")
    return name


def attr_text(value: Any) -> str | None:
    """Return an HDF5 attribute value as text (bytes decoded as UTF-8; None stays None)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


#: Longest JSON text read from a project (settings, specs, histories): larger is damage.
MAX_JSON_CHARS = 16 * 1024 * 1024


def parse_json(text: str | bytes | None, what: str, default: Any = None,
               kind: type | None = None) -> Any:
    """Parse JSON read from a project, refusing damaged text in one line.

    Parameters
    ----------
    text : str, bytes or None
        The text (None gives ``default``).
    what : str
        What it is, for the message (``"settings_json"``).
    default : object
        Returned for None.
    kind : type, optional
        The type the value must have (``dict``, ``list``).

    Returns
    -------
    object
        The value.

    Raises
    ------
    ValueError
        Too large, not JSON, nested too deeply (no ``RecursionError`` escapes), or of the
        wrong type; one line.
    """
    if text is None:
        return default
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        raise ValueError(f"{what} is not text")
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"{what} is {len(text) / 1e6:.0f} MB of JSON (damaged)")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is JSON nested too deeply (damaged)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON ({err.msg} at {err.pos})") from None
    if kind is not None and not isinstance(value, kind):
        raise ValueError(f"{what} is JSON of the wrong type ({type(value).__name__})")
    return value


def attr_json(attrs: h5py.AttributeManager, key: str, default: Any) -> Any:
    """Parse the JSON text stored in attribute ``key``; ``default`` when it is absent.

    Raises
    ------
    ValueError
        Damaged JSON (see :func:`parse_json`), in one line.
    """
    kind = type(default) if isinstance(default, (dict, list)) else None
    return parse_json(attr_text(attrs.get(key)), key, default, kind)
