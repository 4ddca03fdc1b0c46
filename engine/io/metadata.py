"""Pixel size, wavelength and other acquisition values found in files, and how they combine.

Where values come from, per format:

- HemaLens TIFF: the JSON description tifffile writes for ``metadata={...}``
  (``TiffFile.shaped_metadata``) with ``pixel_size_um``, ``wavelength_nm``, ``modality``
  (``phase`` | ``hologram`` | ``qlsi`` | ``rgb``), ``unit`` (``rad`` | ``counts``) and
  optionally ``phase_scale`` (rad per count).
- ImageJ TIFF: ``unit`` (micron, um, nm, mm) with the XResolution tag (pixels per unit).
- OME-TIFF: ``PhysicalSizeX`` and its unit.
- Plain TIFF: XResolution with ResolutionUnit centimetre. Inch-based resolutions are
  ignored: they are almost always a 72/96/300 dpi placeholder written by image software.
- HDF5: attributes of the dataset, then of the file root: ``pixel_size_um``,
  ``wavelength_nm``, or qpformat's ``pixel size`` / ``wavelength`` in metres, plus
  ``qlsi_pitch_term`` (m) and ``imaging_modality`` / ``modality``.
- ``.npz``: scalar members ``pixel_size_um``, ``wavelength_nm`` (and ``phase_scale``).
- PNG/JPEG: a physical resolution (PNG pHYs in metres, JPEG density) when plausible.

Resolution rule: **the file wins when it states a value; the spec (manifest or command
line) fills gaps.** When both are present and differ by more than 1 %, the file value is
used and a warning is logged. File values outside plausible ranges (pixel size
0.005-100 um, wavelength 150-2000 nm) are ignored as placeholders; such spec values are
refused with a :class:`MetadataError`. A value that is still missing but needed raises
:class:`MetadataError` (e.g. ``pixel size unknown: pass --pixel-size``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemalens.engine.errors import MetadataError
from hemalens.engine.io.spec import InputSpec

log = logging.getLogger(__name__)

PIXEL_SIZE_RANGE_UM = (0.005, 100.0)
WAVELENGTH_RANGE_NM = (150.0, 2000.0)

# Length units to micrometres (ImageJ / OME spellings).
_UNIT_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "\\u00b5m": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


@dataclass(frozen=True)
class FileMetadata:
    """Acquisition values a file states about itself (None where it says nothing).

    Attributes
    ----------
    pixel_size_um, wavelength_nm : float or None
        Pixel size in micrometres, wavelength in nanometres.
    modality : str or None
        ``phase``, ``hologram``, ``qlsi`` or ``rgb`` if the file says so.
    unit : str or None
        Unit of stored values (``rad`` or ``counts``) if stated.
    phase_scale : float or None
        Radians per count for integer phase data.
    qlsi_pitch_term_m : float or None
        QLSI grating pitch term in metres (qpformat).
    """

    pixel_size_um: float | None = None
    wavelength_nm: float | None = None
    modality: str | None = None
    unit: str | None = None
    phase_scale: float | None = None
    qlsi_pitch_term_m: float | None = None


def modality_from_text(text: object) -> str | None:
    """Map a free-text modality (HemaLens or qpformat wording) to a HemaLens modality.

    Parameters
    ----------
    text : object
        Attribute value (str or bytes); anything else gives None.

    Returns
    -------
    str or None
        ``phase``, ``hologram``, ``qlsi``, ``rgb`` or None when not recognised.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    t = text.strip().lower()
    if "shearing" in t or "qlsi" in t:
        return "qlsi"
    if "holo" in t:
        return "hologram"
    if t in ("rgb", "color", "colour", "brightfield", "stained"):
        return "rgb"
    if "phase" in t:
        return "phase"
    return None


def _scalar(value: Any) -> float | None:
    """Return a finite positive float from an attribute value, else None."""
    try:
        arr = np.asarray(value)
        if arr.size != 1 or arr.dtype.kind not in "iuf":
            return None
        v = float(arr.reshape(()))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _plausible(value: float | None, bounds: tuple[float, float], what: str) -> float | None:
    if value is None:
        return None
    if bounds[0] <= value <= bounds[1]:
        return value
    log.info("ignoring implausible %s %g stated in the file", what, value)
    return None


def mapping_metadata(*mappings: Mapping[str, Any]) -> FileMetadata:
    """Collect values from key/value stores such as HDF5 attributes or ``.npz`` members.

    Parameters
    ----------
    *mappings : Mapping
        Stores in priority order (e.g. dataset attributes, then file-root attributes).

    Returns
    -------
    FileMetadata
        Values found; the first mapping that has a key wins.
    """
    px = wl = scale = pitch = None
    modality = unit = None
    for m in mappings:
        keys = {str(k).lower(): k for k in m.keys()}

        def get(name: str, _m: Mapping[str, Any] = m, _k: dict[str, Any] = keys) -> Any:
            return _m[_k[name]] if name in _k else None

        if px is None:
            px = _scalar(get("pixel_size_um"))
            if px is None and (v := _scalar(get("pixel size"))) is not None:
                px = v * 1e6  # qpformat stores metres
        if wl is None:
            wl = _scalar(get("wavelength_nm"))
            if wl is None and (v := _scalar(get("wavelength"))) is not None:
                wl = v * 1e9
        if scale is None:
            scale = _scalar(get("phase_scale"))
        if pitch is None:
            pitch = _scalar(get("qlsi_pitch_term"))
        if modality is None:
            modality = modality_from_text(get("modality")) or modality_from_text(
                get("imaging_modality")
            )
        if unit is None and isinstance(u := get("unit"), str | bytes):
            unit = (u.decode() if isinstance(u, bytes) else u).strip().lower()
    return FileMetadata(
        pixel_size_um=_plausible(px, PIXEL_SIZE_RANGE_UM, "pixel size"),
        wavelength_nm=_plausible(wl, WAVELENGTH_RANGE_NM, "wavelength"),
        modality=modality,
        unit=unit,
        phase_scale=scale,
        qlsi_pitch_term_m=pitch,
    )


def tiff_metadata(tif: Any) -> FileMetadata:
    """Read acquisition values from an open :class:`tifffile.TiffFile`.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.

    Returns
    -------
    FileMetadata
        HemaLens JSON values first, then ImageJ, OME and resolution tags for the
        pixel size.
    """
    shaped: dict[str, Any] = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
    meta = mapping_metadata(shaped or {})
    px = meta.pixel_size_um
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    if px is None and tif.is_imagej:
        unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
        px = _from_resolution(page, _UNIT_UM.get(unit))
    if px is None and tif.is_ome:
        px = _ome_pixel_size(tif.ome_metadata or "")
    if px is None:
        # ResolutionUnit 3 = centimetre; 2 (inch) is ignored as a dpi placeholder.
        if int(getattr(page, "resolutionunit", 0) or 0) == 3:
            px = _from_resolution(page, 1e4)
    return FileMetadata(
        pixel_size_um=_plausible(px, PIXEL_SIZE_RANGE_UM, "pixel size"),
        wavelength_nm=meta.wavelength_nm,
        modality=meta.modality,
        unit=meta.unit,
        phase_scale=meta.phase_scale,
        qlsi_pitch_term_m=meta.qlsi_pitch_term_m,
    )


def _from_resolution(page: Any, um_per_unit: float | None) -> float | None:
    if um_per_unit is None:
        return None
    try:
        xres = float(page.resolution[0])
    except (AttributeError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(xres) or xres <= 0 or xres == 1.0:  # 1 px/unit = tag unset
        return None
    return um_per_unit / xres


def _ome_pixel_size(xml: str) -> float | None:
    m = re.search(r'PhysicalSizeX="([^"]+)"', xml)
    if m is None:
        return None
    u = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    factor = _UNIT_UM.get(u.group(1).strip().lower() if u else "µm")
    value = _scalar(_float_or_none(m.group(1)))
    return None if value is None or factor is None else value * factor


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def image_info_metadata(info: Mapping[str, Any]) -> FileMetadata:
    """Read a pixel size from a Pillow image's ``info`` (PNG pHYs, JPEG density).

    Parameters
    ----------
    info : Mapping
        ``PIL.Image.Image.info``.

    Returns
    -------
    FileMetadata
        The pixel size if a plausible physical resolution is stated, else empty.
    """
    dpi = info.get("dpi")
    px = None
    if dpi is not None:
        try:
            d = float(dpi[0])
            px = 25400.0 / d if d > 0 else None
        except (TypeError, ValueError, IndexError):
            px = None
    return FileMetadata(pixel_size_um=_plausible(px, PIXEL_SIZE_RANGE_UM, "pixel size"))


def _choose(
    file_value: float | None,
    spec_value: float | None,
    *,
    what: str,
    unit: str,
    bounds: tuple[float, float],
    file: str,
) -> float | None:
    if spec_value is not None:
        if not (math.isfinite(spec_value) and spec_value > 0):
            raise MetadataError(file, f"{what} must be a positive number, got {spec_value}")
        if not bounds[0] <= spec_value <= bounds[1]:
            raise MetadataError(
                file,
                f"{what} {spec_value:g} {unit} is implausible "
                f"(expected {bounds[0]:g}-{bounds[1]:g} {unit})",
            )
    if file_value is None:
        return spec_value
    if spec_value is not None and abs(spec_value - file_value) > 0.01 * file_value:
        log.warning(
            "%s: file states %s %g %s, given %g %s; using the file's value",
            file,
            what,
            file_value,
            unit,
            spec_value,
            unit,
        )
    return file_value


def resolve_pixel_size(meta: FileMetadata, spec: InputSpec) -> float:
    """Pixel size in micrometres from the file, else from the spec.

    Parameters
    ----------
    meta : FileMetadata
        Values read from the file.
    spec : InputSpec
        User-given values and the file name for messages.

    Returns
    -------
    float
        Pixel size, um.

    Raises
    ------
    MetadataError
        Neither states it, or the spec value is not plausible.
    """
    px = _choose(
        meta.pixel_size_um,
        spec.pixel_size_um,
        what="pixel size",
        unit="um",
        bounds=PIXEL_SIZE_RANGE_UM,
        file=spec.file,
    )
    if px is None:
        raise MetadataError(spec.file, "pixel size unknown: pass --pixel-size")
    return px


def resolve_wavelength(meta: FileMetadata, spec: InputSpec, *, required: bool) -> float | None:
    """Wavelength in nanometres from the file, else from the spec.

    Parameters
    ----------
    meta : FileMetadata
        Values read from the file.
    spec : InputSpec
        User-given values and the file name for messages.
    required : bool
        Raise when it stays unknown (phase, hologram, QLSI); RGB passes False.

    Returns
    -------
    float or None
        Wavelength, nm (None only when not required and unknown).

    Raises
    ------
    MetadataError
        Required but unknown, or the spec value is not plausible.
    """
    wl = _choose(
        meta.wavelength_nm,
        spec.wavelength_nm,
        what="wavelength",
        unit="nm",
        bounds=WAVELENGTH_RANGE_NM,
        file=spec.file,
    )
    if wl is None and required:
        raise MetadataError(spec.file, "wavelength unknown: pass --wavelength")
    return wl


def resolve_phase_scale(meta: FileMetadata, spec: InputSpec) -> float:
    """Radians per count for integer phase data: the file's value, else the spec's.

    Parameters
    ----------
    meta : FileMetadata
        Values read from the file.
    spec : InputSpec
        User-given values and the file name for messages.

    Returns
    -------
    float
        Radians per count.

    Raises
    ------
    MetadataError
        No scale known.
    """
    scale = meta.phase_scale if meta.phase_scale is not None else spec.phase_scale
    if scale is None:
        raise MetadataError(
            spec.file,
            "integer phase image needs a scale: pass --phase-scale (radians per count)",
        )
    if not (math.isfinite(scale) and scale > 0):
        raise MetadataError(spec.file, f"phase scale must be a positive number, got {scale}")
    return float(scale)
