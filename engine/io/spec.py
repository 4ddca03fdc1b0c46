"""What to read: :class:`InputSpec`, manifest parsing and first checks on an input file.

A manifest is a CSV file (comma, semicolon or tab separated, UTF-8 with or without BOM)
with a header row. Only the ``file`` column is required; the others are optional::

    file, modality, given_label, donor, run, pixel_size_um, wavelength_nm, background_file

An optional ``phase_scale`` column (rad per count for integer phase images) is read too.
Paths are relative to the manifest's folder. Values given on the command line fill in
only where a row leaves a cell empty. A row naming a missing file is *not* an error
here: it fails when opened, so the rest of the batch goes on.

An HDF5 file may name one dataset with a ``file.h5:/path/to/dataset`` suffix.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hemalens.engine.errors import InputError

Modality = Literal["phase", "hologram", "qlsi", "rgb"]
MODALITIES: tuple[str, ...] = ("phase", "hologram", "qlsi", "rgb")

#: On-disk formats recognised by their first bytes.
FileFormat = Literal["tiff", "png", "jpeg", "hdf5", "npy", "npz"]

MANIFEST_COLUMNS = (
    "file",
    "modality",
    "given_label",
    "donor",
    "run",
    "pixel_size_um",
    "wavelength_nm",
    "background_file",
)

_H5_SUFFIX = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5|hdf|he5))(?::(?P<dset>/.*))$", re.IGNORECASE)


@dataclass(frozen=True)
class InputSpec:
    """One input file and what is known about it before it is opened.

    Attributes
    ----------
    path : Path
        Resolved path to read (may carry an HDF5 ``:/dataset`` suffix).
    file : str
        The path as the user or manifest wrote it; used in messages and the project.
    modality : str
        ``"auto"`` or one of ``phase``, ``hologram``, ``qlsi``, ``rgb``.
    pixel_size_um, wavelength_nm : float or None
        Acquisition values given by the user; the file's own values win when present.
    background : Path or None
        Empty-field hologram or QLSI reference file.
    given_label, donor, run : str or None
        Bookkeeping copied into the project.
    phase_scale : float or None
        Radians per count for integer phase images (8/16-bit PNG/TIFF).
    """

    path: Path
    file: str
    modality: str = "auto"
    pixel_size_um: float | None = None
    wavelength_nm: float | None = None
    background: Path | None = None
    given_label: str | None = None
    donor: str | None = None
    run: str | None = None
    phase_scale: float | None = None


def make_spec(
    file: str | Path,
    *,
    base: str | Path | None = None,
    modality: str = "auto",
    pixel_size_um: float | None = None,
    wavelength_nm: float | None = None,
    background: str | Path | None = None,
    given_label: str | None = None,
    donor: str | None = None,
    run: str | None = None,
    phase_scale: float | None = None,
) -> InputSpec:
    """Build an :class:`InputSpec` from a path as a user typed it (the CLI's single file).

    Parameters
    ----------
    file : str or Path
        Path as given; a relative path is taken relative to ``base``.
    base : str or Path, optional
        Folder that relative paths refer to (default: the current directory).
    modality, pixel_size_um, wavelength_nm, given_label, donor, run, phase_scale
        As in :class:`InputSpec`.
    background : str or Path, optional
        Empty-field hologram / QLSI reference, resolved against ``base`` too.

    Returns
    -------
    InputSpec
        The spec with ``path`` (and ``background``) resolved.
    """
    root = Path(base) if base is not None else Path.cwd()
    return InputSpec(
        path=_resolve(Path(file), root),
        file=str(file),
        modality=modality,
        pixel_size_um=pixel_size_um,
        wavelength_nm=wavelength_nm,
        background=_resolve(Path(background), root) if background is not None else None,
        given_label=given_label,
        donor=donor,
        run=run,
        phase_scale=phase_scale,
    )


def _resolve(p: Path, root: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else (root / p).absolute()


def read_manifest(
    path: str | Path,
    *,
    pixel_size_um: float | None = None,
    wavelength_nm: float | None = None,
    phase_scale: float | None = None,
) -> list[InputSpec]:
    """Read a manifest CSV into input specs.

    Parameters
    ----------
    path : str or Path
        The manifest file.
    pixel_size_um, wavelength_nm, phase_scale : float, optional
        Command-line values; they fill only cells the manifest leaves empty.

    Returns
    -------
    list of InputSpec
        One spec per non-empty row, in file order.

    Raises
    ------
    InputError
        The manifest is missing, unreadable, has no ``file`` column, a bad number or
        modality, or lists no files. Files that do not exist are not checked here.
    """
    mpath = Path(path)
    name = str(path)
    text = _read_text(mpath, name)
    if not text.strip():
        raise InputError(name, "manifest is empty")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text.splitlines()[0], delimiters=",;\t"
        )
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(text.splitlines(), dialect))
    except csv.Error as exc:
        raise InputError(name, f"not a valid CSV file ({exc})") from None
    header = [h.strip().lower() for h in rows[0]]
    if "file" not in header:
        cols = ", ".join(h for h in header if h) or "none"
        raise InputError(name, f"manifest has no 'file' column (columns: {cols})")
    base = mpath.parent.absolute()
    specs: list[InputSpec] = []
    for lineno, row in enumerate(rows[1:], start=2):
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header) if h}
        if not any(cells.values()):
            continue  # blank line
        file = cells.get("file", "")
        if not file:
            raise InputError(name, f"line {lineno}: empty 'file' cell")
        modality = (cells.get("modality") or "auto").lower()
        if modality not in (*MODALITIES, "auto"):
            raise InputError(
                name,
                f"line {lineno}: unknown modality '{modality}' "
                f"(expected one of {', '.join(MODALITIES)} or empty)",
            )
        bg = cells.get("background_file") or ""
        specs.append(
            InputSpec(
                path=_resolve(Path(file), base),
                file=file,
                modality=modality,
                pixel_size_um=_number(cells, "pixel_size_um", name, lineno, pixel_size_um),
                wavelength_nm=_number(cells, "wavelength_nm", name, lineno, wavelength_nm),
                background=_resolve(Path(bg), base) if bg else None,
                given_label=cells.get("given_label") or None,
                donor=cells.get("donor") or None,
                run=cells.get("run") or None,
                phase_scale=_number(cells, "phase_scale", name, lineno, phase_scale),
            )
        )
    if not specs:
        raise InputError(name, "manifest lists no files")
    return specs


def _read_text(mpath: Path, name: str) -> str:
    if not mpath.exists():
        raise InputError(name, "manifest not found")
    if mpath.is_dir():
        raise InputError(name, "manifest is a directory, expected a CSV file")
    try:
        raw = mpath.read_bytes()
    except OSError as exc:
        raise InputError(name, f"cannot read manifest ({exc.strerror or exc})") from None
    if b"\x00" in raw[:4096]:
        raise InputError(name, "manifest is not a text CSV file (binary content)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(name, "manifest is not UTF-8 text") from None


def _number(
    cells: dict[str, str], key: str, name: str, lineno: int, fallback: float | None
) -> float | None:
    text = cells.get(key, "")
    if not text:
        return fallback
    try:
        value = float(text)
    except ValueError:
        raise InputError(name, f"line {lineno}: {key} '{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(name, f"line {lineno}: {key} must be a positive number, got '{text}'")
    return value


# --------------------------------------------------------------------------- file checks

_MAGIC: tuple[tuple[bytes, FileFormat], ...] = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "npz"),
    (b"PK\x05\x06", "npz"),  # empty zip archive
)

_EXT_FORMAT: dict[str, FileFormat] = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".he5": "hdf5",
    ".npy": "npy",
    ".npz": "npz",
}

_FORMAT_NAME = {
    "tiff": "TIFF",
    "png": "PNG",
    "jpeg": "JPEG",
    "hdf5": "HDF5",
    "npy": "NumPy .npy",
    "npz": "NumPy .npz",
}


def split_dataset(path: Path) -> tuple[Path, str | None]:
    """Split an optional HDF5 ``:/dataset`` suffix off a path.

    Parameters
    ----------
    path : Path
        Path as stored in a spec.

    Returns
    -------
    file : Path
        The file part.
    dataset : str or None
        The dataset name (starting with ``/``) or None.
    """
    m = _H5_SUFFIX.match(str(path))
    if m is None or Path(str(path)).exists():
        return path, None
    return Path(m["file"]), m["dset"]


def check_file(path: Path, file: str) -> Path:
    """Check that an input exists, is a regular file and is not empty.

    Parameters
    ----------
    path : Path
        Path to check (an HDF5 dataset suffix is ignored).
    file : str
        Name used in error messages.

    Returns
    -------
    Path
        The file part of ``path``.

    Raises
    ------
    InputError
        Missing file, a directory, an empty (0-byte) or unreadable file.
    """
    real, _ = split_dataset(path)
    if not real.exists():
        raise InputError(file, "file not found")
    if real.is_dir():
        raise InputError(file, "is a directory, expected an image file")
    try:
        size = real.stat().st_size
    except OSError as exc:
        raise InputError(file, f"cannot access file ({exc.strerror or exc})") from None
    if size == 0:
        raise InputError(file, "file is empty (0 bytes)")
    return real


def sniff_format(path: Path, file: str) -> FileFormat:
    """Tell the on-disk format of a file from its first bytes.

    The content decides; the extension only words the error when the content is
    not a supported format (e.g. a text file renamed ``.tif``).

    Parameters
    ----------
    path : Path
        Input path (an HDF5 dataset suffix is allowed).
    file : str
        Name used in error messages.

    Returns
    -------
    str
        One of ``tiff``, ``png``, ``jpeg``, ``hdf5``, ``npy``, ``npz``.

    Raises
    ------
    InputError
        The file is missing/empty/a directory or not in a supported format.
    """
    real = check_file(path, file)
    try:
        with real.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputError(file, f"cannot read file ({exc.strerror or exc})") from None
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    expected = _EXT_FORMAT.get(real.suffix.lower())
    if expected == "hdf5":
        # HDF5 allows a user block before the signature; h5py knows where to look.
        import h5py

        try:
            if h5py.is_hdf5(real):
                return "hdf5"
        except OSError:
            pass
    if expected is not None:
        raise InputError(
            file,
            f"not a {_FORMAT_NAME[expected]} file (content does not match its "
            f"'{real.suffix}' extension)",
        )
    raise InputError(
        file,
        f"unknown file type '{real.suffix or 'no extension'}' "
        "(expected TIFF, PNG, JPEG, HDF5, .npy or .npz)",
    )
