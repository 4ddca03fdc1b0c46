"""Stored image stacks (TIFF, .npy, .npz, HDF5, PNG/JPEG) and the phase-image source.

:func:`open_stack` gives lazy, format-independent access to the raw frames of a file
(:class:`RawStack`); the hologram, QLSI and RGB sources build on it. :class:`PhaseSource`
turns a stack of stored phase values into float32 radians:

- float data are radians as stored (no background subtraction here);
- integer data (8/16-bit PNG or TIFF) are counts times ``phase_scale`` (radians per
  count) from the file's metadata or the spec, else a :class:`MetadataError`;
- colour images, complex/bool/object data, 1-D or 4-D arrays, frames smaller than
  16 px or larger than 64 Mpx, and frames with NaN/inf are refused with an
  :class:`InputError` naming the file.

Frames are decoded one at a time: TIFF pages, HDF5 slices and memory-mapped ``.npy``.
A ``.npz`` member is loaded whole on first access (zip members cannot be sliced).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import HemaLensError, InputError
from hemalens.engine.io.metadata import (
    FileMetadata,
    image_info_metadata,
    mapping_metadata,
    resolve_phase_scale,
    resolve_pixel_size,
    resolve_wavelength,
    tiff_metadata,
)
from hemalens.engine.io.spec import InputSpec, sniff_format, split_dataset
from hemalens.engine.jobs import Cancelled

MIN_SIDE = 16
MAX_FRAME_PIXELS = 64_000_000  # 64 Mpx, e.g. 8000 x 8000
REFERENCE_NAMES = ("bg_data", "background", "bg", "reference", "ref", "empty")
_FRAME_NAMES = ("phase", "data", "hologram", "holo", "frames", "image", "images", "stack")


# ------------------------------------------------------------------------------ errors


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def wrap_errors(file: str, doing: str) -> Iterator[None]:
    """Turn any library exception into an :class:`InputError` naming ``file``.

    Parameters
    ----------
    file : str
        Name used in the message.
    doing : str
        What was being done, e.g. ``"cannot read frame 3"``.

    Yields
    ------
    None
        Runs the body; HemaLens errors and cancellation pass through unchanged.
    """
    try:
        yield
    except (HemaLensError, Cancelled, KeyboardInterrupt):
        raise
    except MemoryError:
        raise InputError(file, f"{doing}: not enough memory") from None
    except Exception as exc:  # library errors must not reach the caller raw
        raise InputError(file, f"{doing}: {type(exc).__name__}: {_one_line(exc)}") from None


class _TiffLogCapture(logging.Filter):
    """Collect (and silence) tifffile's own error logs, which signal broken files."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())
        return False


def _tiff_msg(text: str) -> str:
    # tifffile prefixes its log messages with an object repr such as "<tifffile.TiffPages @8>"
    return re.sub(r"<[^>]*>\s*", "", text).strip() or text


@contextlib.contextmanager
def _capture_tifffile() -> Iterator[_TiffLogCapture]:
    logger = logging.getLogger("tifffile")
    cap = _TiffLogCapture()
    logger.addFilter(cap)
    try:
        yield cap
    finally:
        logger.removeFilter(cap)


# ------------------------------------------------------------------------- validation


def check_frame_shape(frame_shape: tuple[int, ...], file: str, *, colour: bool = False) -> None:
    """Refuse frames that are too small or too large.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    file : str
        Name used in messages.
    colour : bool
        Whether a trailing channel axis is expected.

    Raises
    ------
    InputError
        A side below 16 px or more than 64 Mpx.
    """
    h, w = frame_shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(
            file, f"frame of {h}x{w} px is too small (at least {MIN_SIDE}x{MIN_SIDE} px)"
        )
    if h * w > MAX_FRAME_PIXELS:
        raise InputError(
            file,
            f"frame of {h}x{w} px ({h * w / 1e6:.0f} Mpx) is too large "
            f"(limit {MAX_FRAME_PIXELS / 1e6:.0f} Mpx)",
        )


def check_dtype(dtype: np.dtype, file: str) -> None:
    """Accept integer and floating-point data only.

    Parameters
    ----------
    dtype : numpy.dtype
        Stored data type.
    file : str
        Name used in messages.

    Raises
    ------
    InputError
        Complex, boolean, object, string or structured data.
    """
    kind = np.dtype(dtype).kind
    if kind in "iuf":
        return
    what = {"c": "complex", "b": "boolean", "O": "object", "U": "text", "S": "bytes"}.get(
        kind, f"'{dtype}'"
    )
    raise InputError(file, f"unsupported data type {what} ({dtype}); expected integer or float")


def split_frames(shape: tuple[int, ...], file: str, *, colour: bool) -> tuple[int, tuple[int, ...]]:
    """Split an array shape into a frame count and a frame shape.

    Parameters
    ----------
    shape : tuple of int
        Full stored shape (frames first).
    file : str
        Name used in messages.
    colour : bool
        The last axis holds colour samples.

    Returns
    -------
    n_frames : int
        Number of frames.
    frame_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.

    Raises
    ------
    InputError
        1-D data, or more than one frame axis (4-D data).
    """
    nd_frame = 3 if colour else 2
    if not colour:
        while len(shape) > 2 and shape[-1] == 1:  # (H, W, 1): greyscale with a channel axis
            shape = shape[:-1]
    if len(shape) < nd_frame:
        raise InputError(
            file,
            f"{len(shape)}-D data of shape {tuple(shape)}; expected a 2-D image "
            "or a 3-D stack (frames, rows, columns)",
        )
    lead = [n for n in shape[:-nd_frame] if n != 1]
    if len(lead) > 1:
        raise InputError(
            file,
            f"{len(shape)}-D data of shape {tuple(shape)}; expected a 2-D image "
            "or a 3-D stack (frames, rows, columns)",
        )
    n = lead[0] if lead else 1
    frame_shape = tuple(int(s) for s in shape[-nd_frame:])
    if n == 0:
        raise InputError(file, "the stack holds no frames")
    return int(n), frame_shape


def looks_like_colour(shape: tuple[int, ...]) -> bool:
    """Guess whether an untagged array's last axis is RGB/RGBA samples.

    Parameters
    ----------
    shape : tuple of int
        Array shape.

    Returns
    -------
    bool
        True for ``(..., H, W, 3|4)`` with H and W larger than the channel count.
    """
    return len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3], shape[-2]) > 4


# ------------------------------------------------------------------------- raw stacks


class RawStack:
    """Lazily readable frames of one file, as stored.

    Attributes
    ----------
    file : str
        Name used in messages.
    n_frames : int
        Number of frames.
    frame_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)`` for colour data.
    dtype : numpy.dtype
        Stored data type.
    colour : bool
        The frames carry colour samples.
    meta : FileMetadata
        Acquisition values stated in the file.
    """

    file: str
    n_frames: int
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    colour: bool = False
    meta: FileMetadata = FileMetadata()

    def read_raw(self, i: int) -> np.ndarray:
        """Return frame ``i`` as stored (H, W) or (H, W, C)."""
        raise NotImplementedError

    def has_reference(self) -> bool:
        """Whether the file also holds an empty-field / reference frame."""
        return False

    def read_reference(self) -> np.ndarray:
        """Return the file's own reference frame (see :meth:`has_reference`)."""
        raise InputError(self.file, "the file holds no background/reference frame")

    def close(self) -> None:
        """Release the file."""

    def _setup(self, shape: tuple[int, ...], dtype: Any, *, colour: bool | None = None) -> None:
        check_dtype(np.dtype(dtype), self.file)
        self.dtype = np.dtype(dtype)
        self.colour = looks_like_colour(shape) if colour is None else colour
        self.n_frames, self.frame_shape = split_frames(shape, self.file, colour=self.colour)
        check_frame_shape(self.frame_shape, self.file, colour=self.colour)

    def _index(self, i: int) -> int:
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range for {self.n_frames} frames")
        return i % self.n_frames


class TiffStack(RawStack):
    """TIFF pages via :mod:`tifffile` (HemaLens, ImageJ, OME and plain TIFF)."""

    def __init__(self, path: Path, file: str) -> None:
        import tifffile

        self.file = file
        self._size = path.stat().st_size
        with _capture_tifffile() as cap, wrap_errors(file, "cannot read TIFF"):
            try:
                self._tif = tifffile.TiffFile(path)
            except tifffile.TiffFileError as exc:
                raise InputError(file, f"not a valid TIFF file ({_one_line(exc)})") from None
            try:
                self._init(cap)
            except BaseException:
                self._tif.close()
                raise

    def _init(self, cap: _TiffLogCapture) -> None:
        tif = self._tif
        if not tif.series:
            raise InputError(self.file, "TIFF file holds no images")
        series = tif.series[0]
        self._series = series
        self._extra_pages: list[Any] = []
        if len(tif.series) > 1:
            # e.g. pages appended one write at a time: tifffile sees one series per write.
            # Same shape and type: they are frames of one stack; anything else is refused
            # rather than read in part.
            kinds = {(tuple(int(v) for v in x.shape), str(x.dtype), x.axes) for x in tif.series}
            if len(kinds) > 1:
                shapes = sorted({"x".join(map(str, k[0])) + f" {k[1]}" for k in kinds})
                raise InputError(self.file, f"TIFF holds {len(tif.series)} image series of "
                                            f"different shapes or types ({', '.join(shapes)});"
                                            " save one stack per shape")
            if any(len(x.pages) != 1 for x in tif.series) or series.ndim != 2:
                raise InputError(self.file, f"TIFF holds {len(tif.series)} image stacks; "
                                            "save them as one stack")
            self._extra_pages = [x.pages[0] for x in tif.series]
        if cap.errors:
            raise InputError(
                self.file, f"file is truncated or corrupt ({_tiff_msg(cap.errors[0])})"
            )
        axes = series.axes
        shape = tuple(int(s) for s in series.shape)
        if self._extra_pages:
            shape = (len(self._extra_pages), *shape)
            axes = "Q" + axes
        self.meta = tiff_metadata(tif)
        self._planar = False
        colour = "S" in axes
        samples_as_frames = False
        if colour:
            s_ax = axes.index("S")
            if s_ax == len(axes) - 3:  # planar configuration: S, Y, X
                # tifffile writes 3- or 4-frame stacks as planar RGB(A) unless told
                # otherwise; float data or a stated non-colour modality mean frames.
                if series.dtype.kind == "f" or self.meta.modality in ("phase", "hologram", "qlsi"):
                    colour, samples_as_frames = False, True
                else:
                    self._planar = True
                    shape = shape[:s_ax] + shape[s_ax + 1 :] + (shape[s_ax],)
        self._setup(shape, series.dtype, colour=colour)
        pages = self._extra_pages or series.pages
        self._per_page = len(pages) == self.n_frames and not samples_as_frames
        if not self._per_page:
            depth = int(getattr(series.keyframe, "imagedepth", 1) or 1)
            if not (len(pages) == 1 and (depth == self.n_frames or samples_as_frames)):
                raise InputError(
                    self.file,
                    f"file is truncated or corrupt: the header describes {self.n_frames} "
                    f"frames but only {len(pages)} are present",
                )
        self._cache: np.ndarray | None = None
        self._check_bytes(pages[len(pages) - 1], len(pages) - 1)

    def _check_bytes(self, page: Any, i: int) -> None:
        offs, counts = page.dataoffsets, page.databytecounts
        if offs and counts and max(o + c for o, c in zip(offs, counts, strict=False)) > self._size:
            raise InputError(
                self.file, f"file is truncated: frame {i} data ends past the end of the file"
            )

    def read_raw(self, i: int) -> np.ndarray:  # noqa: D102
        i = self._index(i)
        with _capture_tifffile() as cap, wrap_errors(self.file, f"cannot read frame {i}"):
            if self._per_page:
                page = (self._extra_pages or self._series.pages)[i]
                if page is None:
                    raise InputError(self.file, f"file is truncated: frame {i} is missing")
                self._check_bytes(page, i)
                arr = page.asarray()
            else:
                if self._cache is None:
                    self._cache = self._series.asarray().reshape(
                        (self.n_frames, *self._stored_frame_shape())
                    )
                arr = self._cache[i]
            if cap.errors:
                raise InputError(self.file, f"cannot decode frame {i} ({_tiff_msg(cap.errors[0])})")
        arr = np.asarray(arr)
        if self._planar:
            arr = np.moveaxis(arr.reshape(-1, *arr.shape[-2:]), 0, -1)
        return arr.reshape(self.frame_shape)

    def _stored_frame_shape(self) -> tuple[int, ...]:
        if self._planar:
            return (self.frame_shape[-1], *self.frame_shape[:2])
        return self.frame_shape

    def close(self) -> None:  # noqa: D102
        self._tif.close()


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        return fmt.read_array_header_1_0(fh)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


class NpyStack(RawStack):
    """A ``.npy`` array, memory-mapped so frames are read on demand."""

    def __init__(self, path: Path, file: str) -> None:
        self.file = file
        with wrap_errors(file, "not a valid .npy file"), path.open("rb") as fh:
            shape, _fortran, dtype = _npy_header(fh)
            header_end = fh.tell()
        check_dtype(dtype, file)
        needed = header_end + math.prod(shape) * dtype.itemsize
        if needed > path.stat().st_size:
            raise InputError(
                file, f"file is truncated ({path.stat().st_size} of {needed} bytes present)"
            )
        self._setup(tuple(shape), dtype)
        with wrap_errors(file, "cannot map .npy file"):
            self._arr = np.load(path, mmap_mode="r", allow_pickle=False)
        self._arr = self._arr.reshape((self.n_frames, *self.frame_shape))

    def read_raw(self, i: int) -> np.ndarray:  # noqa: D102
        i = self._index(i)
        with wrap_errors(self.file, f"cannot read frame {i}"):
            return np.array(self._arr[i])

    def close(self) -> None:  # noqa: D102
        mm = getattr(self._arr, "_mmap", None)
        self._arr = np.empty((0,))
        if mm is not None:
            with contextlib.suppress(Exception):
                mm.close()


class NpzStack(RawStack):
    """One member array of a ``.npz`` archive; scalar members are metadata.

    The frame array is ``phase``, ``data``, ``hologram``... or the only non-scalar
    member; ``bg_data``/``background``/``reference`` is the empty-field frame.
    """

    def __init__(self, path: Path, file: str) -> None:
        self.file = file
        members = self._headers(path, file)
        arrays = {k: v for k, v in members.items() if math.prod(v[0]) > 1}
        scalars = {k for k, v in members.items() if math.prod(v[0]) == 1}
        if not arrays:
            raise InputError(file, ".npz archive holds no image array")
        self._ref_key = next((k for k in REFERENCE_NAMES if k in arrays), None)
        candidates = [k for k in arrays if k != self._ref_key]
        key = next((k for k in _FRAME_NAMES if k in candidates), None)
        if key is None:
            if len(candidates) != 1:
                names = ", ".join(sorted(candidates)) or "none"
                raise InputError(
                    file,
                    f".npz archive holds several arrays ({names}); "
                    "name the frames 'phase' or 'data'",
                )
            key = candidates[0]
        self._key = key
        shape, dtype = arrays[key]
        self._setup(shape, dtype)
        with wrap_errors(file, "not a valid .npz archive"):
            self._npz = np.load(path, allow_pickle=False)
            found: dict[str, Any] = {}
            for k in scalars:
                if np.dtype(members[k][1]).kind in "iufUS":
                    value = self._npz[k]
                    found[k] = value.item() if value.dtype.kind in "US" else value
        self.meta = mapping_metadata(found)
        self._arr: np.ndarray | None = None

    @staticmethod
    def _headers(path: Path, file: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        try:
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if not name.endswith(".npy"):
                        continue
                    with zf.open(name) as fh:
                        shape, _f, dtype = _npy_header(fh)
                    out[name[:-4]] = (tuple(shape), dtype)
        except zipfile.BadZipFile:
            raise InputError(file, "file is truncated or not a valid .npz archive") from None
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(file, f"not a valid .npz archive ({_one_line(exc)})") from None
        if not out:
            raise InputError(file, "not a .npz archive of arrays (no .npy members)")
        return out

    def _load(self, key: str) -> np.ndarray:
        with wrap_errors(self.file, f"cannot read array '{key}'"):
            return np.asarray(self._npz[key])

    def read_raw(self, i: int) -> np.ndarray:  # noqa: D102
        i = self._index(i)
        if self._arr is None:
            self._arr = self._load(self._key).reshape((self.n_frames, *self.frame_shape))
        return self._arr[i]

    def has_reference(self) -> bool:  # noqa: D102
        return self._ref_key is not None

    def read_reference(self) -> np.ndarray:  # noqa: D102
        if self._ref_key is None:
            return super().read_reference()
        return _single_frame(self._load(self._ref_key), self.frame_shape, self.file)

    def close(self) -> None:  # noqa: D102
        self._arr = None
        self._npz.close()


def _single_frame(arr: np.ndarray, frame_shape: tuple[int, ...], file: str) -> np.ndarray:
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[1:] == frame_shape[:2]:
        arr = arr[0]  # a stack of references: use the first
    if arr.shape != frame_shape[:2]:
        raise InputError(
            file,
            f"background/reference of shape {arr.shape} does not match frames "
            f"of shape {frame_shape[:2]}",
        )
    return arr


class H5Stack(RawStack):
    """HDF5 datasets via :mod:`h5py`.

    Either one 2-D/3-D dataset (named by a ``file.h5:/dataset`` suffix, or the only
    image dataset in the file), or the qpformat layout: frames in datasets ``"0"``,
    ``"1"``, ... and the reference in ``"reference"``.
    """

    def __init__(self, path: Path, file: str, dataset: str | None = None) -> None:
        import h5py

        self.file = file
        with wrap_errors(file, "cannot open HDF5 file"):
            try:
                self._h5 = h5py.File(path, "r")
            except OSError as exc:
                msg = _one_line(exc)
                if "truncat" in msg.lower():
                    raise InputError(file, f"file is truncated ({msg})") from None
                raise InputError(file, f"not a readable HDF5 file ({msg})") from None
        try:
            self._init(dataset)
        except BaseException:
            self._h5.close()
            raise

    def _init(self, dataset: str | None) -> None:
        import h5py

        h5 = self._h5
        file = self.file
        self._ref: Any = None
        self._frames: list[Any] | None = None
        datasets: dict[str, Any] = {}

        def collect(name: str, obj: Any) -> None:  # must return None: visititems stops otherwise
            if isinstance(obj, h5py.Dataset):
                datasets[name] = obj

        h5.visititems(collect)
        if not datasets:
            raise InputError(file, "HDF5 file holds no datasets")
        numbered = sorted((n for n in datasets if n.isdigit()), key=int)
        if dataset is not None:
            obj = h5.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                names = ", ".join("/" + n for n in sorted(datasets)[:8])
                raise InputError(file, f"no dataset '{dataset}' in the file (datasets: {names})")
            self._dset = obj
            shape, dtype = obj.shape, obj.dtype
        elif numbered:
            # qpformat raw layout: one dataset per frame
            self._frames = [datasets[n] for n in numbered]
            first = self._frames[0]
            for d in self._frames[1:]:
                if d.shape != first.shape:
                    raise InputError(
                        file, f"frame datasets differ in shape ({first.shape} vs {d.shape})"
                    )
            self._dset = first
            shape, dtype = (len(self._frames), *first.shape), first.dtype
        else:
            cands = [
                n
                for n, d in datasets.items()
                if d.size > 1 and n.rsplit("/", 1)[-1].lower() not in REFERENCE_NAMES
            ]
            if not cands:
                raise InputError(file, "HDF5 file holds no image dataset")
            if len(cands) > 1:
                images = [n for n in cands if len(datasets[n].shape) in (2, 3)]
                named = [n for n in images if n.rsplit("/", 1)[-1].lower() in _FRAME_NAMES]
                cands = named[:1] or images
            if len(cands) != 1:
                names = ", ".join("/" + n for n in sorted(cands)[:8])
                raise InputError(
                    file,
                    f"HDF5 file holds several image datasets ({names}); "
                    "name one as file.h5:/dataset",
                )
            self._dset = datasets[cands[0]]
            shape, dtype = self._dset.shape, self._dset.dtype
        for name in REFERENCE_NAMES:
            if isinstance(obj := self._dset.parent.get(name), h5py.Dataset) and obj.size > 1:
                self._ref = obj
                break
        if dtype.kind == "V" or dtype.names:
            raise InputError(file, f"unsupported data type (compound {dtype})")
        self._setup(tuple(int(s) for s in shape), dtype)
        self.meta = mapping_metadata(self._dset.attrs, h5.attrs)

    def read_raw(self, i: int) -> np.ndarray:  # noqa: D102
        i = self._index(i)
        with wrap_errors(self.file, f"cannot read frame {i}"):
            if self._frames is not None:
                arr = self._frames[i][()]
            elif len(self._dset.shape) == len(self.frame_shape):
                arr = self._dset[()]
            else:
                arr = self._dset[i] if self._dset.shape[0] == self.n_frames else None
                if arr is None:
                    full = self._dset[()].reshape((self.n_frames, *self.frame_shape))
                    arr = full[i]
        return np.asarray(arr).reshape(self.frame_shape)

    def has_reference(self) -> bool:  # noqa: D102
        return self._ref is not None

    def read_reference(self) -> np.ndarray:  # noqa: D102
        if self._ref is None:
            return super().read_reference()
        with wrap_errors(self.file, "cannot read the reference dataset"):
            arr = np.asarray(self._ref[()])
        return _single_frame(arr, self.frame_shape, self.file)

    def close(self) -> None:  # noqa: D102
        self._h5.close()


class PillowStack(RawStack):
    """A single PNG or JPEG image via Pillow (8/16-bit greyscale or colour)."""

    _GREY = {
        "L": np.uint8,
        "1": np.uint8,
        "I;16": np.uint16,
        "I;16B": np.uint16,
        "I;16L": np.uint16,
        "I": np.int32,
        "F": np.float32,
    }

    def __init__(self, path: Path, file: str) -> None:
        import warnings

        from PIL import Image, UnidentifiedImageError

        self.file = file
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self._img = Image.open(path)
        except Image.DecompressionBombError:
            raise InputError(
                file, f"image too large (limit {MAX_FRAME_PIXELS / 1e6:.0f} Mpx)"
            ) from None
        except UnidentifiedImageError:
            raise InputError(
                file, "not an image Pillow can read (corrupt or foreign format)"
            ) from None
        except OSError as exc:
            raise InputError(file, f"file is truncated or corrupt ({_one_line(exc)})") from None
        w, h = self._img.size
        self.mode = self._img.mode
        self.format = self._img.format or ""
        if self.mode in self._GREY:
            self._setup((h, w), self._GREY[self.mode], colour=False)
        else:
            alpha = "A" in self.mode or "transparency" in self._img.info
            self._setup((h, w, 4 if alpha else 3), np.uint8, colour=True)
        self.meta = image_info_metadata(self._img.info)

    def read_raw(self, i: int) -> np.ndarray:  # noqa: D102
        self._index(i)
        img: Any = self._img
        try:
            if self.colour:
                img = img.convert("RGBA" if self.frame_shape[-1] == 4 else "RGB")
            elif self.mode == "1":
                img = img.convert("L")
            arr = np.asarray(img)
        except OSError as exc:  # Pillow reports truncated/corrupt data as OSError
            raise InputError(
                self.file, f"file is truncated or corrupt ({_one_line(exc)})"
            ) from None
        return arr.reshape(self.frame_shape)

    def close(self) -> None:  # noqa: D102
        self._img.close()


def open_stack(path: Path, file: str) -> RawStack:
    """Open the frames stored in ``path`` whatever the format.

    Parameters
    ----------
    path : Path
        File (HDF5 paths may carry a ``:/dataset`` suffix).
    file : str
        Name used in messages.

    Returns
    -------
    RawStack
        Lazy access to the frames and the file's metadata.

    Raises
    ------
    InputError
        Missing, empty, foreign, truncated or unsupported content.
    """
    fmt = sniff_format(path, file)
    real, dataset = split_dataset(path)
    if dataset is not None and fmt != "hdf5":
        raise InputError(file, "a ':/dataset' suffix applies to HDF5 files only")
    opener: dict[str, Callable[[], RawStack]] = {
        "tiff": lambda: TiffStack(real, file),
        "npy": lambda: NpyStack(real, file),
        "npz": lambda: NpzStack(real, file),
        "hdf5": lambda: H5Stack(real, file, dataset),
        "png": lambda: PillowStack(real, file),
        "jpeg": lambda: PillowStack(real, file),
    }
    with wrap_errors(file, "cannot open file"):
        return opener[fmt]()


# ------------------------------------------------------------------------------ sources


class BaseSource:
    """Shared behaviour of frame sources: bounds checks, iteration, context manager.

    Subclasses set ``spec``, ``modality``, ``n_frames``, ``shape``, ``pixel_size_um``,
    ``wavelength_nm`` and implement :meth:`_read`.
    """

    spec: InputSpec
    modality: str
    n_frames: int
    shape: tuple[int, ...]
    pixel_size_um: float
    wavelength_nm: float | None

    def read(self, i: int) -> np.ndarray:
        """Return frame ``i`` (phase: float32 radians; rgb: uint8 (H, W, 3)).

        Parameters
        ----------
        i : int
            Frame index, ``0 <= i < n_frames`` (negative counts from the end).

        Returns
        -------
        numpy.ndarray
            The frame.

        Raises
        ------
        IndexError
            ``i`` out of range.
        InputError
            The frame cannot be read or holds invalid values.
        """
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range for {self.n_frames} frames")
        i %= self.n_frames
        with wrap_errors(self.spec.file, f"cannot read frame {i}"):
            return self._read(i)

    def _read(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying files."""

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self.read(i)

    def __enter__(self) -> BaseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec.file!r}, modality={self.modality!r}, "
            f"n_frames={self.n_frames}, shape={self.shape}, "
            f"pixel_size_um={self.pixel_size_um:g})"
        )


def check_finite(frame: np.ndarray, i: int, file: str) -> None:
    """Refuse frames holding NaN or infinite values.

    Parameters
    ----------
    frame : numpy.ndarray
        Frame data.
    i : int
        Frame index for the message.
    file : str
        Name used in the message.

    Raises
    ------
    InputError
        ``frame 3 contains NaN values`` / ``... infinite values``.
    """
    if frame.dtype.kind != "f" or np.isfinite(frame).all():
        return
    what = "NaN" if np.isnan(frame).any() else "infinite"
    raise InputError(file, f"frame {i} contains {what} values")


class PhaseSource(BaseSource):
    """Phase frames (float32 radians) from a stored phase stack.

    Parameters
    ----------
    spec : InputSpec
        What to open.
    stack : RawStack, optional
        An already opened stack of ``spec.path`` (taken over and closed by the source).
    """

    modality = "phase"

    def __init__(self, spec: InputSpec, stack: RawStack | None = None) -> None:
        self.spec = spec
        self._stack = stack if stack is not None else open_stack(spec.path, spec.file)
        try:
            self._init()
        except BaseException:
            self._stack.close()
            raise

    def _init(self) -> None:
        st, file = self._stack, self.spec.file
        if st.colour:
            kind = "RGBA" if st.frame_shape[-1] == 4 else "RGB"
            raise InputError(file, f"{kind} colour image where phase expected")
        self.shape = st.frame_shape
        self.n_frames = st.n_frames
        self._scale: float | None = None
        if st.dtype.kind in "iu":
            self._scale = resolve_phase_scale(st.meta, self.spec)
        self.pixel_size_um = resolve_pixel_size(st.meta, self.spec)
        self.wavelength_nm = resolve_wavelength(st.meta, self.spec, required=True)

    def _read(self, i: int) -> np.ndarray:
        raw = self._stack.read_raw(i)
        if self._scale is not None:
            return (raw.astype(np.float32) * np.float32(self._scale)).astype(np.float32)
        out = np.asarray(raw, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            check_finite(out, i, self.spec.file)
        return out

    def close(self) -> None:  # noqa: D102
        self._stack.close()
