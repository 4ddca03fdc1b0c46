"""Cells in stained RGB images, crowded ones included: nuclei by stain separation, seeded watershed.

Foreground = stained pixels (:func:`stain_score`); nuclei = the haematoxylin (nuclear
stain) channel of :func:`skimage.color.rgb2hed` (Ruifrok & Johnston's colour
deconvolution) above its Otsu level, touching nuclei split by a distance-transform
watershed. Every nucleus seeds one cell; cell boundaries come from a watershed of the
foreground's distance transform flooded from the nuclei, so touching and overlapping cells
are cut along their necks and every cell keeps the cytoplasm around its own nucleus.
Nuclear fragments closer than about 1.5 um (the lobes of a segmented nucleus) are one
nucleus. Stained objects without a nucleus (red cells, platelets) fall back to the
distance-transform split of the foreground.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from hemalens.engine.segment.detect import reading_order

# The foreground threshold never goes below the brightest (background) stain level plus
# this margin, so an empty field does not get split by Otsu into two noise classes.
_MIN_CONTRAST = 0.08
#: Nuclear fragments closer than about two closing radii (radius_px * this) are one nucleus.
CLOSE_FRACTION = 0.25
#: Touching nuclei are split at distance peaks this fraction of the cell radius apart.
SPLIT_FRACTION = 0.75
#: Adjacent regions merge when the foreground's distance transform on their shared
#: boundary reaches this fraction of the smaller region's peak (no neck between them).
NECK_RATIO = 0.85
#: Neck merging applies to regions with at most this many neighbours (not in crowds).
MAX_NEIGHBOURS = 2
#: Weight of the foreground's distance transform against the distance to the nuclei.
NECK_WEIGHT = 1.0


def as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    """Validate an RGB frame and return it as C-contiguous ``(H, W, 3)`` uint8.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped); uint8, or float in [0, 1]
        (values above 1 are taken as 0-255).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.

    Raises
    ------
    ValueError
        If the array is not a non-empty colour image or has non-finite values.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {rgb.shape}")
    rgb = rgb[..., :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if not np.issubdtype(rgb.dtype, np.number) or np.iscomplexobj(rgb):
        raise ValueError(f"expected a real RGB frame, got dtype {rgb.dtype}")
    values = rgb.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("RGB frame has non-finite values")
    if np.issubdtype(rgb.dtype, np.floating) and values.max() <= 1.0:
        values = values * 255.0
    return np.ascontiguousarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def stain_score(rgb: np.ndarray) -> np.ndarray:
    """Return a [0, 1] foreground score: ``1 - min(R, G, B) / 255``.

    The minimum channel is high only for white/light-grey background; any stain
    (purple nuclei, blue-to-pink cytoplasm) or darkness lowers it, whatever the hue.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32.
    """
    return 1.0 - rgb.min(axis=2).astype(np.float32) / 255.0


def rgb_objects(
    rgb: np.ndarray, pixel_size_um: float, min_diameter_um: float, min_area_px: float,
    *, use_nuclei: bool = True,
) -> tuple[list[np.ndarray], np.ndarray, tuple[float, float, float]]:
    """Find cells in a stained RGB frame, crowded ones included, splitting touching ones.

    Foreground = the lightly smoothed :func:`stain_score` above the lower of the Otsu
    and the triangle threshold (never below the background level + 0.08), holes
    filled. With dark nuclei Otsu alone separates nuclei from pale cytoplasm; the
    triangle method finds the foot of the dominant background peak instead.

    Every nucleus (:func:`nuclei_labels`, haematoxylin channel of ``rgb2hed``) seeds one
    cell: a watershed flooded from the nuclei over ``distance to the nuclei - distance to
    the background`` gives each cell the stained pixels around its own nucleus and cuts
    touching cells at their necks; :func:`merge_without_neck` rejoins the pieces of one
    cell with a lobed nucleus. Stained components without a nucleus (red cells) are
    split as before: a watershed of the negated distance transform, one marker per
    ``peak_local_max`` peak (``min_distance`` = the radius of the smallest accepted
    cell) that is also an h-maximum of height 1/4 of that radius, so shallow bumps of a
    ragged outline do not start their own cell.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 frame.
    pixel_size_um : float
        Pixel size, um.
    min_diameter_um : float
        Smallest cell diameter of interest, um (sets the marker spacing).
    min_area_px : float
        Regions with a smaller ``cv2.contourArea`` are dropped as specks.
    use_nuclei : bool
        Seed cells from nuclei (:func:`nuclei_labels`, the default); False gives the
        earlier rule (distance-transform peaks of the foreground only), kept for
        comparison (benchmarks/bench_crowded.py).

    Returns
    -------
    contours : list of numpy.ndarray
        One external contour per cell, frame px, in reading order.
    foreground : numpy.ndarray
        ``(H, W)`` bool foreground mask.
    background_rgb : tuple of float
        Median colour of the background pixels (white if there are none).
    """
    score = cv2.GaussianBlur(stain_score(rgb), (5, 5), 1.0)
    score8 = np.clip(np.rint(score * 255), 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(score8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    triangle, _ = cv2.threshold(score8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_TRIANGLE)
    floor = np.percentile(score8, 1) + _MIN_CONTRAST * 255
    foreground = ndi.binary_fill_holes(score8 > max(min(otsu, triangle), floor))
    foreground = ndi.binary_opening(foreground, structure=np.ones((3, 3), bool))
    background = ~foreground
    bg = np.median(rgb[background], axis=0) if background.any() else np.full(3, 255.0)
    bg_rgb = (float(bg[0]), float(bg[1]), float(bg[2]))
    if not foreground.any():
        return [], foreground, bg_rgb

    radius_px = max(min_diameter_um / 2 / pixel_size_um, 2.0)
    dist = ndi.distance_transform_edt(foreground)
    nuclei = (nuclei_labels(rgb, foreground, radius_px) if use_nuclei
              else np.zeros(foreground.shape, np.int32))
    components, n_comp = ndi.label(foreground)
    markers = nuclei.copy()
    # components without a nucleus: one marker per prominent distance peak (old rule)
    bare = np.setdiff1d(np.arange(1, n_comp + 1), np.unique(components[nuclei > 0]))
    if bare.size:
        bare_mask = np.isin(components, bare)
        extra = _distance_markers(dist, np.where(bare_mask, components, 0), radius_px)
        markers[extra > 0] = extra[extra > 0] + markers.max()
    if nuclei.any():
        # nucleated cells: flood outwards from each nucleus, cut where the floods meet
        # and at necks of the foreground
        near = ndi.distance_transform_edt(nuclei == 0)
        elevation = np.where(nuclei > 0, -dist, near - NECK_WEIGHT * dist)
        labels = merge_without_neck(watershed(elevation, markers, mask=foreground))
    else:
        labels = watershed(-dist, markers, mask=foreground)

    contours: list[np.ndarray] = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        local = (labels[sl] == k).view(np.uint8)
        found, _ = cv2.findContours(
            local, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(sl[1].start, sl[0].start)
        )
        if not found:
            continue
        c = max(found, key=cv2.contourArea)
        if cv2.contourArea(c) >= min_area_px:
            contours.append(c)
    contours.sort(key=reading_order)
    return contours, foreground, bg_rgb


def _distance_markers(dist: np.ndarray, components: np.ndarray, radius_px: float) -> np.ndarray:
    """One marker per prominent distance-transform peak, at least one per component."""
    peaks = peak_local_max(
        dist, min_distance=max(int(radius_px), 1), labels=components, exclude_border=False
    )
    prominent = h_maxima(np.where(components > 0, dist, 0), max(radius_px / 4, 1.0)).astype(bool)
    peaks = peaks[prominent[peaks[:, 0], peaks[:, 1]]]
    # peaks on one h-maximum plateau share a marker
    plateaus, _ = ndi.label(prominent, structure=np.ones((3, 3), bool))
    markers = np.zeros(dist.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = plateaus[peaks[:, 0], peaks[:, 1]]
    # every component gets at least one marker (its deepest point)
    ids = np.unique(components[components > 0])
    unmarked = np.setdiff1d(ids, components[markers > 0])
    if unmarked.size:
        deepest = ndi.maximum_position(dist, components, unmarked)
        offset = markers.max()
        for j, (r, c) in enumerate(deepest):
            markers[r, c] = offset + 1 + j
    return markers


def nuclei_labels(rgb: np.ndarray, foreground: np.ndarray, radius_px: float) -> np.ndarray:
    """Label the nuclei of a stained frame, touching nuclei split.

    The haematoxylin channel of :func:`skimage.color.rgb2hed` (smoothed, sigma 1 px) is
    thresholded at its Otsu level over the foreground (never below the background's 99th
    percentile), holes filled; fragments closer than about ``0.8 * radius_px`` (two
    closing radii: the lobes of one segmented nucleus) are joined, specks smaller than a
    disc of ``radius_px / 3`` removed. One label per nucleus, which seeds one cell.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 frame.
    foreground : numpy.ndarray
        ``(H, W)`` bool stained pixels.
    radius_px : float
        Radius of the smallest cell of interest, px.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels, 0 = no nucleus.
    """
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    out = np.zeros(foreground.shape, np.int32)
    if not foreground.any():
        return out
    h = ndi.gaussian_filter(rgb2hed(rgb)[..., 0], 1.0)
    inside = h[foreground]
    if inside.size < 2 or np.ptp(inside) <= 0:
        return out
    t = threshold_otsu(inside)
    if (~foreground).any():
        t = max(t, float(np.percentile(h[~foreground], 99)))
    mask = ndi.binary_fill_holes((h > t) & foreground)
    mask = ndi.binary_opening(mask, structure=np.ones((3, 3), bool))
    # lobes of one nucleus: join fragments less than ~2 closing radii apart
    close_px = max(int(round(radius_px * CLOSE_FRACTION)), 1)
    disk = np.hypot(*np.mgrid[-close_px:close_px + 1, -close_px:close_px + 1]) <= close_px
    joined = ndi.binary_closing(np.pad(mask, close_px), structure=disk)[
        close_px:-close_px, close_px:-close_px] & foreground
    parts, n = ndi.label(joined | mask)
    if n == 0:
        return out
    sizes = np.bincount(parts.ravel())
    keep = sizes >= np.pi * max(radius_px / 3, 1.5) ** 2
    keep[0] = False
    parts = np.where(keep[parts], parts, 0)
    if not parts.any() or SPLIT_FRACTION <= 0:
        return parts.astype(np.int32)
    # touching nuclei of neighbouring cells: split at deep necks only (lobes stay whole)
    dist = ndi.distance_transform_edt(parts > 0)
    markers = _distance_markers(dist, parts, radius_px * SPLIT_FRACTION)
    return watershed(-dist, markers, mask=parts > 0).astype(np.int32)


def merge_without_neck(labels: np.ndarray, ratio: float | None = None) -> np.ndarray:
    """Merge adjacent regions whose union has no neck between them.

    Two touching or overlapping cells meet at a neck: on their shared boundary the
    distance transform *of the two regions' union* drops well below each region's peak
    (0.71 of the radius for equal discs overlapping by 30 %, 0 when they just touch). The
    lobes of one nucleus, or the halves of one elongated cell, meet where the cell is as
    wide as anywhere else. Regions ``a``, ``b`` are merged (union-find) when the highest
    distance on their shared boundary reaches ``ratio`` times the smaller of their peaks.
    Distances are computed per pair, on the union alone. Inside a crowd, where regions are
    cut by several neighbours, no region looks like it has a neck: only regions with at
    most :data:`MAX_NEIGHBOURS` neighbours are merged (lobed cells inside crowds stay
    split; the crowded-field benchmark counts them as splits).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` int labels, 0 = background.
    ratio : float, optional
        Saddle / peak above which regions merge (default :data:`NECK_RATIO`).

    Returns
    -------
    numpy.ndarray
        Labels, merged regions sharing the lowest id.
    """
    ratio = NECK_RATIO if ratio is None else ratio
    lab = np.asarray(labels)
    if lab.max() < 2:
        return lab
    n = int(lab.max()) + 1
    codes = []
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        codes.append(np.minimum(a[m], b[m]).astype(np.int64) * n + np.maximum(a[m], b[m]))
    pairs = np.unique(np.concatenate(codes))
    # only in small groups: inside a crowd every cut region looks neck-free to its
    # neighbour, so regions with more than MAX_NEIGHBOURS neighbours are left alone
    degree = np.bincount(np.concatenate([pairs // n, pairs % n]), minlength=n)
    boxes = ndi.find_objects(lab)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for c in pairs.tolist():
        a, b = divmod(c, n)
        if max(degree[a], degree[b]) > MAX_NEIGHBOURS:
            continue
        sa, sb = boxes[a - 1], boxes[b - 1]
        sl = tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(sa, sb,
                                                                                     strict=True))
        crop = lab[sl]
        ina, inb = crop == a, crop == b
        d = ndi.distance_transform_edt(np.pad(ina | inb, 1))[1:-1, 1:-1]
        edge = np.zeros(crop.shape, bool)
        for axis in (0, 1):
            fwd = [slice(None)] * 2
            bwd = [slice(None)] * 2
            fwd[axis], bwd[axis] = slice(1, None), slice(None, -1)
            touch = (ina[tuple(bwd)] & inb[tuple(fwd)]) | (inb[tuple(bwd)] & ina[tuple(fwd)])
            edge[tuple(bwd)] |= touch
            edge[tuple(fwd)] |= touch
        saddle = float(d[edge].max()) if edge.any() else 0.0
        if saddle >= ratio * min(float(d[ina].max()), float(d[inb].max())):
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    return roots[lab]
