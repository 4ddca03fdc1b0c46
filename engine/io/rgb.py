"""Colour (stained, bright-field) crops from PNG, JPEG or TIFF as uint8 (H, W, 3).

Conversions, so every frame comes out as 8-bit RGB:

- RGBA (and greyscale + alpha) is composited onto white; a fully opaque alpha is dropped;
- greyscale is replicated to three channels;
- 16-bit data are scaled to 8 bits (``round(v / 257)``, so 65535 -> 255); Pillow already
  reduces 16-bit colour PNGs to 8 bits itself;
- float data in [0, 1] are scaled by 255; float data in [0, 255] are rounded; other
  ranges are refused.

A pixel size is required (from the file or the spec); a wavelength is optional.
"""

from __future__ import annotations

import numpy as np

from hemalens.engine.errors import InputError
from hemalens.engine.io.metadata import resolve_pixel_size, resolve_wavelength
from hemalens.engine.io.phase import BaseSource, RawStack, check_finite, open_stack
from hemalens.engine.io.spec import InputSpec


def _to_uint8(arr: np.ndarray, i: int, file: str) -> np.ndarray:
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind in "iu":
        hi = int(arr.max()) if arr.size else 0
        lo = int(arr.min()) if arr.size else 0
        if lo < 0:
            raise InputError(file, f"frame {i} has negative colour values")
        if arr.dtype.itemsize == 1 or (hi <= 255 and arr.dtype != np.uint16):
            return arr.astype(np.uint8)
        if hi > 65535:
            raise InputError(file, f"frame {i} has colour values above 16 bits")
        return np.rint(arr / 257.0).astype(np.uint8)
    check_finite(arr, i, file)
    flo, fhi = float(arr.min()), float(arr.max())
    if flo >= 0 and fhi <= 1:
        return np.rint(arr * 255.0).astype(np.uint8)
    if flo >= 0 and fhi <= 255:
        return np.rint(arr).astype(np.uint8)
    raise InputError(
        file, f"frame {i} has float colour values in [{flo:g}, {fhi:g}], expected 0-1 or 0-255"
    )


def to_rgb8(frame: np.ndarray, i: int = 0, file: str = "<array>") -> np.ndarray:
    """Convert one stored colour or greyscale frame to uint8 RGB.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(H, W)`` greyscale, ``(H, W, 2)`` greyscale + alpha, ``(H, W, 3)`` RGB or
        ``(H, W, 4)`` RGBA, integer or float.
    i : int
        Frame index for messages.
    file : str
        Name used in messages.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(H, W, 3)``.

    Raises
    ------
    InputError
        Unsupported channel count or value range.
    """
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise InputError(file, f"frame {i} of shape {arr.shape} is not a colour image")
    arr = _to_uint8(arr, i, file)
    c = arr.shape[-1]
    colour = arr[..., :3] if c >= 3 else np.repeat(arr[..., :1], 3, axis=-1)
    if c in (2, 4):
        alpha = arr[..., -1:]
        if not (alpha == 255).all():
            a = alpha.astype(np.float32) / 255.0
            colour = np.rint(colour * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return np.ascontiguousarray(colour)


class RGBSource(BaseSource):
    """Colour frames (uint8 (H, W, 3)) from PNG, JPEG or TIFF files.

    Parameters
    ----------
    spec : InputSpec
        What to open.
    stack : RawStack, optional
        An already opened stack of ``spec.path`` (taken over and closed by the source).
    """

    modality = "rgb"

    def __init__(self, spec: InputSpec, stack: RawStack | None = None) -> None:
        self.spec = spec
        self._stack = stack if stack is not None else open_stack(spec.path, spec.file)
        try:
            st = self._stack
            if st.colour and st.frame_shape[-1] not in (2, 3, 4):
                raise InputError(spec.file, f"{st.frame_shape[-1]}-channel image, expected RGB")
            self.n_frames = st.n_frames
            self.shape = (*st.frame_shape[:2], 3)
            self.pixel_size_um = resolve_pixel_size(st.meta, spec)
            self.wavelength_nm = resolve_wavelength(st.meta, spec, required=False)
        except BaseException:
            self._stack.close()
            raise

    def _read(self, i: int) -> np.ndarray:
        return to_rgb8(self._stack.read_raw(i), i, self.spec.file)

    def close(self) -> None:  # noqa: D102
        self._stack.close()
