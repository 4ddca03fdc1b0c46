"""Phase retrieval from off-axis holograms and QLSI interferograms (via :mod:`qpretrieve`).

Off-axis holograms, per frame:

1. qpretrieve's sideband filter (``OffAxisHologram.run_pipeline(filter_name,
   filter_size)``), learnt once (on the empty-field hologram when there is one, else on
   frame 0) and applied to every frame alike by
   :class:`~hemalens.engine.io.sideband_filter.SidebandFilter` (the same field, at frame
   rate);
2. the empty-field hologram, processed the same way (qpretrieve's ``process_like``
   pattern), is divided out of the field, which removes the carrier, the stationary
   optical background and the wrap-around of ``phase - background``;
3. :func:`skimage.restoration.unwrap_phase`;
4. :func:`remove_tilt`: a plane fitted robustly to the background pixels is subtracted
   so that the background sits at ~0 rad (cells keep their positive phase).

QLSI interferograms go through ``qpretrieve.QLSInterferogram`` with the reference
interferogram, a Tukey filter and the file's wavelength and ``qlsi_pitch_term``; the
integrated wavefront is already continuous, so only step 4 follows.

The background comes from ``spec.background`` (its first frame if it is a stack) or,
failing that, from the file itself (``bg_data`` in a ``.npz``, ``reference`` in a
qpformat HDF5). Without one, the phase still goes through unwrapping and tilt removal,
which then also absorbs the carrier mismatch of the sideband position.

Sign: qpretrieve's sideband choice fixes the sign of the phase by the carrier direction.
Blood cells have positive phase, so with ``HologramSettings.auto_sign`` (default) a stack
whose frame 0 shows clearly negative objects is inverted as a whole (:func:`dominant_sign`).

Defaults (``smooth disk``, 1/2 of the sideband distance, padding 1) were chosen on
382x512 simulated holograms with a 4 px carrier: interior error 0.032 rad RMS vs 0.040 for
``disk`` 1/2 and 0.07-0.08 for 1/3 filters; padding 2 gave the same accuracy, slower.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from hemalens.engine.errors import InputError, MetadataError
from hemalens.engine.io.metadata import resolve_pixel_size, resolve_wavelength
from hemalens.engine.io.phase import (
    BaseSource,
    RawStack,
    check_finite,
    open_stack,
    wrap_errors,
)
from hemalens.engine.io.sideband_filter import SidebandFilter
from hemalens.engine.io.spec import InputSpec

#: QLSI filter half-width in cycles per pixel: 180 frequency indices of the 2048-point
#: padded spectrum of a 720 px interferogram (qpretrieve's recipe), scaled to any size.
QLSI_FILTER_FREQ = 180 / 2048


def _qpretrieve() -> Any:
    # qpretrieve warns at import about optional FFT back-ends (pyfftw, cupy).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import qpretrieve
    return qpretrieve


@dataclass(frozen=True)
class HologramSettings:
    """Off-axis retrieval settings.

    Attributes
    ----------
    filter_name : str
        qpretrieve Fourier filter (``disk``, ``smooth disk``, ``gauss``, ...).
    filter_size : float
        Filter radius as a fraction of the sideband distance.
    padding : int
        qpretrieve zero padding factor (FFT size: next power of two of
        ``padding * max(shape)``). 1 is as accurate as 2 on 382x512 frames (edge and
        interior errors within 0.01 rad) and about 4x faster in the FFT step.
    auto_sign : bool
        Blood cells have positive phase; if the objects of the first retrieved frame are
        clearly negative (the carrier was tilted the other way), invert every frame.
    local_unwrap : bool
        Unwrap only around phase jumps (:func:`unwrap_local`, several times faster);
        False unwraps every whole frame.
    """

    filter_name: str = "smooth disk"
    filter_size: float = 0.5
    padding: int = 1
    auto_sign: bool = True
    local_unwrap: bool = True


# ------------------------------------------------------------------------- pure helpers


def carrier_strength(image: np.ndarray) -> float:
    """Measure how strongly an image shows an off-axis interference carrier.

    The spectrum of a centred, Hann-windowed crop (at most 256 px a side) is searched
    for its strongest peak away from the low frequencies (radius > 0.1 cycles/px);
    the result is that peak over the median magnitude of the same region. Holograms
    give values of hundreds; phase images and noise stay below ~10.

    Parameters
    ----------
    image : numpy.ndarray
        2-D greyscale image.

    Returns
    -------
    float
        Peak-to-median ratio of the high-frequency spectrum.
    """
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    ch, cw = min(h, 256), min(w, 256)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = img[y0 : y0 + ch, x0 : x0 + cw]
    crop = crop - crop.mean()
    win = np.outer(np.hanning(ch), np.hanning(cw))
    spec = np.abs(np.fft.rfft2(crop * win))
    fy = np.fft.fftfreq(ch)[:, None]
    fx = np.fft.rfftfreq(cw)[None, :]
    region = np.hypot(fy, fx) > 0.1
    vals = spec[region]
    if vals.size == 0:
        return 0.0
    med = float(np.median(vals))
    return float(vals.max() / med) if med > 0 else (math.inf if vals.max() > 0 else 0.0)


def remove_tilt(
    phase: np.ndarray, *, clip: float = 3.0, iterations: int = 3, max_points: int = 40_000
) -> np.ndarray:
    """Subtract a plane fitted robustly to the background, leaving it at ~0 rad.

    A least-squares plane is fitted to a grid subsample; pixels whose residual lies more
    than ``clip`` robust sigmas from the background median (objects, their halos) are
    excluded, grown by two samples, and the plane is refitted on the rest. The final
    offset is the median of the background residual.

    Parameters
    ----------
    phase : numpy.ndarray
        2-D unwrapped phase, radians.
    clip : float
        Outlier threshold in robust standard deviations (1.4826 MAD).
    iterations : int
        Rounds of fit-then-exclude before the final fit on the background pixels.
    max_points : int
        Size of the subsample used for fitting.

    Returns
    -------
    numpy.ndarray
        float32 phase with the background plane removed.
    """
    ph = np.asarray(phase, dtype=np.float64)
    h, w = ph.shape
    step = max(1, math.ceil(math.sqrt(h * w / max_points)))
    sub = ph[::step, ::step]
    ys = np.linspace(-1, 1, h)[::step]
    xs = np.linspace(-1, 1, w)[::step]
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    design = np.stack([np.ones_like(xx), xx, yy], axis=-1).reshape(-1, 3)
    values = sub.ravel()
    keep = np.ones(values.size, dtype=bool)
    # the two-sample growth of the excluded pixels: scipy's default cross, twice
    grow = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))

    def fit(mask: np.ndarray) -> np.ndarray:
        # Normal equations of the 3-parameter plane: the columns (1, x, y) on [-1, 1] are
        # well conditioned, and this is ~10x faster per frame than an SVD least squares.
        weighted = design * mask[:, None]
        return np.linalg.solve(weighted.T @ design, weighted.T @ values)

    for _ in range(iterations):
        resid = values - design @ fit(keep)
        kept = resid[keep]
        med = float(np.median(kept))
        sigma = max(1.4826 * float(np.median(np.abs(kept - med))), 1e-3)
        outlier = (np.abs(resid - med) > clip * sigma).reshape(sub.shape).view(np.uint8)
        new_keep = ~cv2.dilate(outlier, grow, iterations=2).view(bool).ravel()
        if new_keep.sum() < max(16, values.size // 10):
            break  # nearly everything is "object": keep the previous background
        keep = new_keep
    coef = fit(keep)
    resid = values - design @ coef
    offset = coef[0] + float(np.median(resid[keep]))
    out = ph.astype(np.float32)
    # the plane as a row term and a column term: two float32 passes, not a float64 plane
    out -= (offset + coef[2] * np.linspace(-1, 1, h)).astype(np.float32)[:, None]
    out -= (coef[1] * np.linspace(-1, 1, w)).astype(np.float32)[None, :]
    return out


#: Unwrap the whole frame when the boxes around phase jumps cover more than this share of
#: it (a wrapped background ramp, noise): the local path would save nothing.
LOCAL_UNWRAP_MAX_FRACTION = 0.3
#: Pixels added around the jumps of an object so that its box border lies in unwrapped
#: background.
LOCAL_UNWRAP_MARGIN = 4


def phase_jumps(wrapped: np.ndarray) -> np.ndarray:
    """Mark pixels beside a wrap: a neighbour differs by more than pi.

    Parameters
    ----------
    wrapped : numpy.ndarray
        2-D wrapped phase in [-pi, pi].

    Returns
    -------
    numpy.ndarray
        bool mask of pixels on either side of a jump.
    """
    jumps = np.zeros(wrapped.shape, bool)
    dy = np.abs(np.diff(wrapped, axis=0)) > np.pi
    dx = np.abs(np.diff(wrapped, axis=1)) > np.pi
    jumps[:-1] |= dy
    jumps[1:] |= dy
    jumps[:, :-1] |= dx
    jumps[:, 1:] |= dx
    return jumps


def unwrap_local(
    wrapped: np.ndarray,
    *,
    margin: int = LOCAL_UNWRAP_MARGIN,
    max_fraction: float = LOCAL_UNWRAP_MAX_FRACTION,
) -> np.ndarray:
    """Unwrap the phase only inside boxes around its jumps; elsewhere it needs nothing.

    After division by the empty-field hologram the background is near 0 rad and only
    cells thicker than pi wrap. Those jumps are found, grouped into boxes (grown by
    ``margin``, overlapping boxes merged), and each box is unwrapped with
    :func:`skimage.restoration.unwrap_phase`, then shifted by the multiple of 2 pi that
    puts its border back on the wrapped (background) values. Frames where the boxes
    cover more than ``max_fraction`` of the image (a wrapping background) are unwrapped
    whole, as before. Phase without jumps is returned as it is.

    Parameters
    ----------
    wrapped : numpy.ndarray
        2-D wrapped phase in [-pi, pi].
    margin : int
        Pixels around the jumps.
    max_fraction : float
        Share of the frame above which the whole frame is unwrapped.

    Returns
    -------
    numpy.ndarray
        float64 unwrapped phase; equal to ``wrapped`` outside the boxes.
    """
    from skimage.restoration import unwrap_phase

    wrapped = np.asarray(wrapped, dtype=np.float64)
    jumps = phase_jumps(wrapped)
    if not jumps.any():
        return wrapped.copy()
    h, w = wrapped.shape
    def grow(sl: tuple[slice, slice]) -> tuple[slice, slice]:
        return (slice(max(0, sl[0].start - margin), min(h, sl[0].stop + margin)),
                slice(max(0, sl[1].start - margin), min(w, sl[1].stop + margin)))

    boxes = [grow(sl) for sl in ndi.find_objects(ndi.label(jumps, np.ones((3, 3)))[0])]
    while True:  # merge overlapping boxes until none overlap
        mask = np.zeros_like(jumps)
        for sl in boxes:
            mask[sl] = True
        merged = ndi.find_objects(ndi.label(mask)[0])
        if len(merged) == len(boxes):
            break
        boxes = merged
    if sum((sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
           for sl in boxes) > max_fraction * h * w:
        return unwrap_phase(wrapped)
    out = wrapped.copy()
    for sl in boxes:
        crop = wrapped[sl]
        if min(crop.shape) < 2:
            continue
        u = unwrap_phase(crop)
        edge = np.concatenate([u[0] - crop[0], u[-1] - crop[-1], u[:, 0] - crop[:, 0],
                               u[:, -1] - crop[:, -1]])
        out[sl] = u - 2.0 * np.pi * np.round(np.median(edge) / (2.0 * np.pi))
    return out


def dominant_sign(phase: np.ndarray, *, clip: float = 4.0, min_pixels: int = 20) -> int:
    """Tell whether the objects in a background-free phase image are positive or negative.

    Parameters
    ----------
    phase : numpy.ndarray
        2-D phase with the background near 0 rad.
    clip : float
        Pixels beyond ``clip`` robust sigmas count as object.
    min_pixels : int
        Fewer object pixels than this on the negative side never flips the sign.

    Returns
    -------
    int
        -1 when the object phase mass below the background exceeds twice the mass
        above it, else +1 (also for empty frames).
    """
    ph = np.asarray(phase, dtype=np.float64)
    med = float(np.median(ph))
    sigma = max(1.4826 * float(np.median(np.abs(ph - med))), 1e-3)
    pos = ph - med - clip * sigma
    neg = med - clip * sigma - ph
    if int((neg > 0).sum()) < min_pixels:
        return 1
    return -1 if neg[neg > 0].sum() > 2.0 * pos[pos > 0].sum() else 1


class OffAxisRetriever:
    """Retrieve phase from off-axis holograms that share one geometry and background.

    Parameters
    ----------
    background : numpy.ndarray, optional
        Empty-field hologram of the same geometry.
    settings : HologramSettings
        Filter settings.
    """

    def __init__(
        self, background: np.ndarray | None = None, settings: HologramSettings | None = None
    ) -> None:
        self.settings = settings or HologramSettings()
        self._bg_conj: np.ndarray | None = None  # conjugate of the background's field
        self._kws: dict[str, Any] | None = None
        self._filter: SidebandFilter | None = None
        if background is not None:
            self._learn(background)
            assert self._filter is not None
            self._bg_conj = np.conj(self._filter(background))

    def _holo(self, data: np.ndarray) -> Any:
        qp = _qpretrieve()
        # numpy's FFT, pinned: qpretrieve would pick pyFFTW when it is installed, which plans
        # every transform afresh (50 vs 21 ms per 382x512 frame). Only the learning frame
        # goes through here; the frames themselves go through SidebandFilter.
        return qp.OffAxisHologram(
            np.asarray(data, dtype=np.float64), padding=self.settings.padding, copy=False,
            fft_interface=qp.fourier.FFTFilterNumpy,
        )

    def _learn(self, hologram: np.ndarray) -> None:
        """Find the sideband on ``hologram`` with qpretrieve and keep its filter."""
        holo = self._holo(hologram)
        holo.run_pipeline(
            filter_name=self.settings.filter_name, filter_size=self.settings.filter_size
        )
        kws = dict(holo.pipeline_kws)
        kws.pop("output_domain", None)
        self._kws = kws
        self._filter = SidebandFilter.from_hologram(holo, _qpretrieve())

    @property
    def sideband_freq(self) -> tuple[float, float] | None:
        """Sideband position in cycles per pixel (None until known)."""
        if self._kws is None:
            return None
        fy, fx = self._kws["sideband_freq"]
        return float(fy), float(fx)

    def wrapped_phase(self, hologram: np.ndarray) -> np.ndarray:
        """Return the wrapped phase of ``hologram`` relative to the background.

        Parameters
        ----------
        hologram : numpy.ndarray
            2-D hologram.

        Returns
        -------
        numpy.ndarray
            float64 phase in [-pi, pi].
        """
        if self._filter is None:
            self._learn(hologram)
            assert self._filter is not None
        field = self._filter(hologram)
        if self._bg_conj is not None:
            field *= self._bg_conj
        return np.angle(field)

    def __call__(self, hologram: np.ndarray) -> np.ndarray:
        """Return the unwrapped, tilt-free phase of ``hologram`` (float32 radians).

        Parameters
        ----------
        hologram : numpy.ndarray
            2-D hologram.

        Returns
        -------
        numpy.ndarray
            float32 phase, background ~0 rad.
        """
        if self.settings.local_unwrap:
            return remove_tilt(unwrap_local(self.wrapped_phase(hologram)))
        from skimage.restoration import unwrap_phase

        return remove_tilt(unwrap_phase(self.wrapped_phase(hologram)))


def retrieve_qlsi(
    interferogram: np.ndarray,
    reference: np.ndarray | None,
    *,
    wavelength_nm: float,
    pitch_term_m: float,
    padding: int = 2,
) -> np.ndarray:
    """Retrieve the phase of one QLSI interferogram (tilt removed, float32 radians).

    Parameters
    ----------
    interferogram : numpy.ndarray
        2-D QLSI interferogram.
    reference : numpy.ndarray or None
        Reference interferogram without sample.
    wavelength_nm : float
        Wavelength, nm.
    pitch_term_m : float
        qpretrieve ``qlsi_pitch_term`` (grating pitch x pixel / distance), metres.
    padding : int
        qpretrieve zero padding factor.

    Returns
    -------
    numpy.ndarray
        float32 phase, background ~0 rad.
    """
    qp = _qpretrieve()
    data = np.asarray(interferogram, dtype=np.float64)
    n_fft = 2 ** math.ceil(math.log2(padding * max(data.shape))) if padding else max(data.shape)
    q = qp.QLSInterferogram(
        data,
        reference=None if reference is None else np.asarray(reference, dtype=np.float64),
        padding=padding,
        filter_name="tukey",
        filter_size=QLSI_FILTER_FREQ * n_fft,
        filter_size_interpretation="frequency index",
        wavelength=wavelength_nm * 1e-9,
        qlsi_pitch_term=pitch_term_m,
        fft_interface=qp.fourier.FFTFilterNumpy,  # see OffAxisRetriever._holo
    )
    phase = np.asarray(q.phase).reshape(data.shape)
    return remove_tilt(phase)


# ------------------------------------------------------------------------------ sources


def _background(spec: InputSpec, stack: RawStack) -> np.ndarray | None:
    """Read the background frame named by the spec, else the file's own, else None."""
    if spec.background is None:
        return stack.read_reference() if stack.has_reference() else None
    bgname = str(spec.background)
    try:
        bst = open_stack(spec.background, bgname)
        try:
            if bst.colour:
                raise InputError(bgname, "is a colour image, expected a greyscale hologram")
            bg = bst.read_raw(0)
        finally:
            bst.close()
    except InputError as exc:
        raise InputError(spec.file, f"background {bgname}: {exc.reason}") from None
    if bg.shape != stack.frame_shape:
        raise InputError(
            spec.file,
            f"background {bgname} has shape {bg.shape}, frames have {stack.frame_shape}",
        )
    return bg


def _check_greyscale(stack: RawStack, spec: InputSpec, what: str) -> None:
    if stack.colour:
        raise InputError(spec.file, f"colour image where a greyscale {what} is expected")


#: The learnt retriever and sign of recently read stacks. An import reads a stack in
#: chunks (background blocks), each opening the source anew, possibly on another worker;
#: learning the sideband, the background field and the sign from frame 0 again cost
#: ~30 ms per chunk, 2.4 ms per frame at 12-frame blocks. Each process keeps its own.
_ANCHORS: OrderedDict[tuple[Any, ...], tuple[OffAxisRetriever, int]] = OrderedDict()
_ANCHORS_KEPT = 4
_ANCHORS_LOCK = threading.Lock()


def _anchor_cache_get(key: tuple[Any, ...] | None) -> tuple[OffAxisRetriever, int] | None:
    if key is None:
        return None
    with _ANCHORS_LOCK:
        found = _ANCHORS.get(key)
        if found is not None:
            _ANCHORS.move_to_end(key)
        return found


def _anchor_cache_put(key: tuple[Any, ...] | None, value: tuple[OffAxisRetriever, int]) -> None:
    if key is None:
        return
    with _ANCHORS_LOCK:
        _ANCHORS[key] = value
        while len(_ANCHORS) > _ANCHORS_KEPT:
            _ANCHORS.popitem(last=False)


class HologramSource(BaseSource):
    """Phase frames retrieved from an off-axis hologram stack.

    Parameters
    ----------
    spec : InputSpec
        What to open (``spec.background``: empty-field hologram).
    stack : RawStack, optional
        An already opened stack of ``spec.path`` (taken over and closed by the source).
    settings : HologramSettings, optional
        Retrieval settings.
    """

    modality = "hologram"

    def __init__(
        self,
        spec: InputSpec,
        stack: RawStack | None = None,
        settings: HologramSettings | None = None,
    ) -> None:
        self.spec = spec
        self._stack = stack if stack is not None else open_stack(spec.path, spec.file)
        try:
            _check_greyscale(self._stack, spec, "hologram")
            self.n_frames = self._stack.n_frames
            self.shape = self._stack.frame_shape
            self.pixel_size_um = resolve_pixel_size(self._stack.meta, spec)
            self.wavelength_nm = resolve_wavelength(self._stack.meta, spec, required=True)
            self._bg = _background(spec, self._stack)
            if self._bg is not None and not np.isfinite(self._bg).all():
                raise InputError(spec.file, "background hologram contains NaN or infinite values")
            self._settings = settings or HologramSettings()
            # built on first read, so that opening (e.g. to count frames) stays cheap
            self._retriever: OffAxisRetriever | None = None
            self._sign: int | None = None
            self._anchor = self._anchor_key()  # the identity of what was opened
        except BaseException:
            self._stack.close()
            raise

    def _hologram(self, i: int) -> np.ndarray:
        raw = self._stack.read_raw(i)
        check_finite(raw, i, self.spec.file)
        return raw

    def _read(self, i: int) -> np.ndarray:
        if self._retriever is None:
            anchor = _anchor_cache_get(self._anchor)
            if anchor is not None:
                self._retriever, self._sign = anchor
        if self._retriever is None:
            with wrap_errors(self.spec.file, "cannot process the background hologram"):
                self._retriever = OffAxisRetriever(self._bg, self._settings)
        if self._sign is None:
            # Frame 0 anchors the stack: the sideband (when there is no background) and
            # the sign are fixed from it, whichever frame is read first.
            first = self._retriever(self._hologram(0))
            self._sign = dominant_sign(first) if self._settings.auto_sign else 1
            _anchor_cache_put(self._anchor, (self._retriever, self._sign))
            if i == 0:
                return first if self._sign > 0 else -first
        phase = self._retriever(self._hologram(i))
        return phase if self._sign > 0 else -phase

    def _anchor_key(self) -> tuple[Any, ...] | None:
        """Return what the retriever and the sign depend on: the files, the settings."""
        try:
            files = [os.stat(p) for p in (self.spec.path, self.spec.background) if p]
        except OSError:
            return None
        return (str(self.spec.path), str(self.spec.background),
                tuple((f.st_dev, f.st_ino, f.st_size, f.st_mtime_ns) for f in files),
                self._settings, self.shape)

    def close(self) -> None:  # noqa: D102
        self._stack.close()


class QLSISource(BaseSource):
    """Phase frames retrieved from QLSI interferograms (qpformat HDF5 layout).

    Parameters
    ----------
    spec : InputSpec
        What to open (``spec.background``: reference interferogram).
    stack : RawStack, optional
        An already opened stack of ``spec.path`` (taken over and closed by the source).
    """

    modality = "qlsi"

    def __init__(self, spec: InputSpec, stack: RawStack | None = None) -> None:
        self.spec = spec
        self._stack = stack if stack is not None else open_stack(spec.path, spec.file)
        try:
            _check_greyscale(self._stack, spec, "QLSI interferogram")
            meta = self._stack.meta
            self.n_frames = self._stack.n_frames
            self.shape = self._stack.frame_shape
            self.pixel_size_um = resolve_pixel_size(meta, spec)
            wl = resolve_wavelength(meta, spec, required=True)
            assert wl is not None
            self.wavelength_nm = wl
            if meta.qlsi_pitch_term_m is None:
                raise MetadataError(
                    spec.file, "QLSI pitch term unknown (no 'qlsi_pitch_term' attribute)"
                )
            self._pitch = meta.qlsi_pitch_term_m
            self._ref = _background(spec, self._stack)
        except BaseException:
            self._stack.close()
            raise

    def _read(self, i: int) -> np.ndarray:
        raw = self._stack.read_raw(i)
        check_finite(raw, i, self.spec.file)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return retrieve_qlsi(
                raw, self._ref, wavelength_nm=self.wavelength_nm, pitch_term_m=self._pitch
            )

    def close(self) -> None:  # noqa: D102
        self._stack.close()
