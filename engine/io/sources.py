"""Open any supported input as a :class:`FrameSource`; tell its modality when not given.

Modality detection (``spec.modality == "auto"``), first rule that applies:

1. a modality stated in the file (HemaLens TIFF JSON ``modality``, HDF5
   ``imaging_modality``/``modality`` attributes, e.g. qpformat QLSI files);
2. a ``qlsi_pitch_term`` attribute -> ``qlsi``;
3. JPEG files and colour (RGB/RGBA/palette) images -> ``rgb``;
4. a stated unit of ``rad`` -> ``phase``;
5. greyscale integer data, or data stored with an empty-field frame (``bg_data`` in a
   ``.npz``): ``hologram`` when frame 0 shows a strong off-axis carrier peak in its
   spectrum (:func:`~hemalens.engine.io.hologram.carrier_strength` above
   :data:`CARRIER_THRESHOLD`), else ``phase`` - which for integer data then needs a
   ``phase_scale`` (a clear :class:`MetadataError` otherwise);
6. greyscale float data -> ``phase``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from hemalens.engine.errors import InputError
from hemalens.engine.io.hologram import HologramSource, QLSISource, carrier_strength
from hemalens.engine.io.phase import PhaseSource, PillowStack, RawStack, open_stack, wrap_errors
from hemalens.engine.io.rgb import RGBSource
from hemalens.engine.io.spec import MODALITIES, InputSpec, Modality

#: Peak-to-median ratio of the high-frequency spectrum above which a greyscale image is
#: a hologram. Measured: real HL60 hologram 419, its empty field 758, QLSI 854, simulated
#: holograms > 3000; phase images with sharp cells 9, noise 4.
CARRIER_THRESHOLD = 50.0


@runtime_checkable
class FrameSource(Protocol):
    """Frames of one input, read lazily.

    Attributes
    ----------
    spec : InputSpec
        What was opened.
    modality : str
        ``phase``, ``hologram``, ``qlsi`` or ``rgb``.
    n_frames : int
        Number of frames (known without decoding them).
    shape : tuple of int
        ``(H, W)`` for phase-like sources, ``(H, W, 3)`` for rgb.
    pixel_size_um : float
        Pixel size, um.
    wavelength_nm : float or None
        Wavelength, nm (None only for rgb).
    """

    spec: InputSpec
    modality: str
    n_frames: int
    shape: tuple[int, ...]
    pixel_size_um: float
    wavelength_nm: float | None

    def read(self, i: int) -> np.ndarray:
        """Return frame ``i``: float32 radians (H, W), finite; or uint8 (H, W, 3)."""
        ...

    def close(self) -> None:
        """Release the underlying files."""
        ...

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...


def _modality_of(stack: RawStack) -> Modality:
    meta = stack.meta
    if meta.modality in MODALITIES:
        return cast(Modality, meta.modality)
    if meta.qlsi_pitch_term_m is not None:
        return "qlsi"
    if stack.colour or (isinstance(stack, PillowStack) and stack.format == "JPEG"):
        return "rgb"  # JPEG is lossy: never a phase image or a hologram
    if meta.unit == "rad":
        return "phase"
    if stack.dtype.kind in "iu" or stack.has_reference():
        strength = carrier_strength(stack.read_raw(0))
        return "hologram" if strength > CARRIER_THRESHOLD else "phase"
    return "phase"


def detect_modality(path: Path) -> Modality:
    """Tell the modality of a file from its metadata, format and content.

    Parameters
    ----------
    path : Path
        The file (an HDF5 ``:/dataset`` suffix is allowed).

    Returns
    -------
    str
        ``phase``, ``hologram``, ``qlsi`` or ``rgb``.

    Raises
    ------
    InputError
        The file cannot be read or is not a supported image format.
    """
    file = str(path)
    with wrap_errors(file, "cannot tell the modality"):
        stack = open_stack(Path(path), file)
        try:
            return _modality_of(stack)
        finally:
            stack.close()


def probe_input(path: Path) -> dict[str, Any]:
    """Read what an input file says about itself, before pixel size or wavelength are known.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    dict
        ``modality`` (detected), ``n_frames``, ``frame_shape``, ``pixel_size_um`` and
        ``wavelength_nm`` (None where the file does not say).

    Raises
    ------
    InputError
        The file cannot be read.
    """
    file = str(path)
    with wrap_errors(file, "cannot read"):
        stack = open_stack(Path(path), file)
        try:
            return {"modality": _modality_of(stack), "n_frames": int(stack.n_frames),
                    "frame_shape": tuple(int(v) for v in stack.frame_shape),
                    "pixel_size_um": stack.meta.pixel_size_um,
                    "wavelength_nm": stack.meta.wavelength_nm}
        finally:
            stack.close()


def open_source(spec: InputSpec) -> FrameSource:
    """Open an input as a frame source of the spec's (or the detected) modality.

    Parameters
    ----------
    spec : InputSpec
        What to open.

    Returns
    -------
    FrameSource
        A lazily reading source; close it (or use it as a context manager).

    Raises
    ------
    InputError
        Unreadable, foreign or invalid input, naming ``spec.file``.
    MetadataError
        A needed pixel size, wavelength or phase scale is unknown.
    """
    if spec.modality not in ("auto", *MODALITIES):
        raise InputError(
            spec.file,
            f"unknown modality '{spec.modality}' (expected auto, {', '.join(MODALITIES)})",
        )
    with wrap_errors(spec.file, "cannot open file"):
        stack = open_stack(spec.path, spec.file)
        try:
            modality = _modality_of(stack) if spec.modality == "auto" else spec.modality
        except BaseException:
            stack.close()
            raise
        source = {
            "phase": PhaseSource,
            "hologram": HologramSource,
            "qlsi": QLSISource,
            "rgb": RGBSource,
        }[modality](spec, stack)  # the source owns the stack and closes it on failure
        return cast(FrameSource, source)


__all__ = ["CARRIER_THRESHOLD", "FrameSource", "detect_modality", "open_source", "probe_input"]
