"""Out-of-distribution test sets and the statistics of a model's confidence on them.

Röhrl et al. 2023, §5.2: a leukocyte classifier should give low confidence to objects it
was not trained for. Four sets stand in for the paper's: simulated erythrocytes and
defocused leukocytes (objects that do reach a QPI patch), scikit-learn's 8x8 digits
upsampled to the patch size (the paper's MNIST) and uniform white noise. The confidence
distributions are compared with a Kruskal-Wallis test, Bonferroni-corrected pairwise
Mann-Whitney U tests and the AUROC of "leukocyte vs set".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from hemalens.engine.segment.normalise import normalise_phase
from hemalens.engine.segment.patches import extract_patches
from hemalens.engine.segment.settings import SegmentSettings
from hemalens.engine.synth.background import frame_noise
from hemalens.engine.synth.cells import LEUKOCYTES, draw_defocused, draw_erythrocyte

__all__ = ["OOD_SETS", "ood_sets", "ood_statistics", "render_phase_patch"]

#: The out-of-distribution sets, in the order :func:`ood_sets` returns them.
OOD_SETS = ("erythrocyte", "defocused", "digits", "noise")
#: Defocus distances of the defocused set, um (as the simulator's defocused objects).
DEFOCUS_UM = (4.0, 15.0)
#: Per-patch background noise of the phase sets, rad (as the simulator's runs).
NOISE_RAD = (0.02, 0.05)


def render_phase_patch(
    canvas: np.ndarray,
    pixel_size_um: float,
    patch_size: int,
    settings: SegmentSettings | None = None,
    *,
    noise_rad: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Turn one object canvas into a patch exactly as segmentation cuts real ones.

    The canvas (object centred, zero background, rad) is laid on a zero frame with room for
    the whole field of view, ``noise_rad`` of the simulator's background noise is added,
    and :func:`~hemalens.engine.segment.patches.extract_patches` resamples
    ``settings.patch_fov_um`` around the canvas centre to ``patch_size`` pixels, which
    :func:`~hemalens.engine.segment.normalise.normalise_phase` maps to [0, 1].

    Parameters
    ----------
    canvas : numpy.ndarray
        ``(h, w)`` phase of one object, rad, centred on the canvas.
    pixel_size_um : float
        Canvas sampling, um per pixel.
    patch_size : int
        Patch side, px.
    settings : SegmentSettings, optional
        Field of view and normalisation; default :class:`SegmentSettings()`.
    noise_rad : float
        Standard deviation of the added background noise, rad (0: none).
    rng : numpy.random.Generator, optional
        Noise source (needed when ``noise_rad > 0``).

    Returns
    -------
    numpy.ndarray
        ``(patch_size, patch_size)`` float32 in [0, 1].
    """
    settings = settings or SegmentSettings()
    canvas = np.asarray(canvas, dtype=np.float32)
    fov_px = settings.patch_fov_um / pixel_size_um
    if canvas.ndim != 2:
        raise ValueError(f"canvas must be 2-D, got shape {canvas.shape}")
    need = int(math.ceil(fov_px)) + 4  # the field of view plus the bilinear neighbours
    frame = np.zeros((max(canvas.shape[0], need), max(canvas.shape[1], need)), np.float32)
    top = (frame.shape[0] - canvas.shape[0]) // 2
    left = (frame.shape[1] - canvas.shape[1]) // 2
    frame[top : top + canvas.shape[0], left : left + canvas.shape[1]] = canvas
    if noise_rad > 0:
        if rng is None:
            raise ValueError("render_phase_patch needs rng when noise_rad > 0")
        frame += frame_noise(frame.shape, noise_rad, rng)
    centre = np.array([[left + (canvas.shape[1] - 1) / 2, top + (canvas.shape[0] - 1) / 2]])
    raw, _ = extract_patches(frame, centre, pixel_size_um, patch_size, settings.patch_fov_um)
    return normalise_phase(raw[0], settings)


def ood_sets(
    n: int,
    patch_size: int = 50,
    seed: int = 0,
    *,
    pixel_size_um: float = 0.3,
    settings: SegmentSettings | None = None,
    wavelength_nm: float = 528.0,
) -> dict[str, np.ndarray]:
    """Build the four out-of-distribution test sets as patches like the real ones.

    - ``erythrocyte``: biconcave red cells (:func:`~hemalens.engine.synth.cells.
      draw_erythrocyte`, 0.3-0.8 rad peak on the rim, a dip in the centre);
    - ``defocused``: leukocytes of random class, 4-15 um out of focus (either side) by
      angular-spectrum propagation (:func:`~hemalens.engine.synth.cells.draw_defocused`);
    - ``digits``: scikit-learn's ``load_digits`` (8x8, 0..16) upsampled bilinearly to the
      patch size and divided by 16 (drawn without replacement while ``n <= 1797``);
    - ``noise``: uniform white noise in [0, 1].

    The two phase sets get the simulator's background noise (0.02-0.05 rad) and go through
    :func:`render_phase_patch`, i.e. the segmentation's field of view, resampling and
    :func:`~hemalens.engine.segment.normalise.normalise_phase`. Each set has its own random
    stream derived from ``seed``, so a set does not change when another is resized.

    Parameters
    ----------
    n : int
        Patches per set.
    patch_size : int
        Patch side, px.
    seed : int
        Seed of everything random.
    pixel_size_um : float
        Sampling of the drawn cells, um per pixel.
    settings : SegmentSettings, optional
        Field of view and normalisation (default: the segmentation defaults, 15 um, clip).
    wavelength_nm : float
        Wavelength of the defocus propagation, nm.

    Returns
    -------
    dict of str to numpy.ndarray
        :data:`OOD_SETS` -> ``(n, patch_size, patch_size)`` float32 in [0, 1].

    Raises
    ------
    ValueError
        ``n < 0``, ``patch_size < 2`` or a non-positive pixel size or wavelength.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if int(patch_size) != patch_size or patch_size < 2:
        raise ValueError(f"patch_size must be an integer >= 2, got {patch_size!r}")
    for name, v in (("pixel_size_um", pixel_size_um), ("wavelength_nm", wavelength_nm)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    n, s = int(n), int(patch_size)
    settings = settings or SegmentSettings()
    streams = np.random.SeedSequence(seed).spawn(len(OOD_SETS))
    rngs = {name: np.random.default_rng(ss) for name, ss in zip(OOD_SETS, streams, strict=True)}
    out = {name: np.empty((n, s, s), np.float32) for name in OOD_SETS}

    rng = rngs["erythrocyte"]
    for i in range(n):
        cell = draw_erythrocyte(rng, pixel_size_um)
        noise = rng.uniform(*NOISE_RAD)
        out["erythrocyte"][i] = render_phase_patch(
            cell.phase, pixel_size_um, s, settings, noise_rad=noise, rng=rng
        )

    rng = rngs["defocused"]
    for i in range(n):
        kind = LEUKOCYTES[int(rng.integers(len(LEUKOCYTES)))]
        dz = rng.uniform(*DEFOCUS_UM) * rng.choice([-1.0, 1.0])
        cell, _ = draw_defocused(kind, dz, rng, pixel_size_um, wavelength_nm)
        noise = rng.uniform(*NOISE_RAD)
        out["defocused"][i] = render_phase_patch(
            cell.phase, pixel_size_um, s, settings, noise_rad=noise, rng=rng
        )

    if n:
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        digits = load_digits().images.astype(np.float32)
        pick = rngs["digits"].choice(len(digits), size=n, replace=n > len(digits))
        for i, j in enumerate(pick.tolist()):
            up = cv2.resize(digits[j], (s, s), interpolation=cv2.INTER_LINEAR)
            out["digits"][i] = np.clip(up / 16.0, 0.0, 1.0)
    out["noise"][:] = rngs["noise"].uniform(0.0, 1.0, size=(n, s, s))
    return out


def _finite_1d(name: str, values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"confidences of set {name!r} must be a non-empty 1-D array")
    if not np.isfinite(a).all():
        raise ValueError(f"confidences of set {name!r} contain NaN or infinite values")
    return a


def ood_statistics(
    confidence_by_set: Mapping[str, np.ndarray], reference: str = "leukocyte"
) -> dict[str, Any]:
    """Compare the confidence distributions of the reference (in-distribution) and OOD sets.

    - Kruskal-Wallis H test over all sets, the reference included
      (:func:`scipy.stats.kruskal`); when every value of every set is identical the test
      is undefined and reported as ``H = 0, p = 1`` (no evidence of a difference).
    - Post hoc: two-sided Mann-Whitney U (:func:`scipy.stats.mannwhitneyu`) for every pair
      of sets: the reference against each OOD set, then the OOD sets among themselves;
      Bonferroni-corrected ``p_bonferroni = min(1, p * m)`` with ``m`` the number of pairs.
    - AUROC of "reference vs set" (:func:`sklearn.metrics.roc_auc_score`), the reference
      being the positive class and the confidence the score: 1 means every reference cell
      is more confident than every cell of the set, 0.5 no separation.

    Parameters
    ----------
    confidence_by_set : dict of str to numpy.ndarray
        Set name -> 1-D confidences (finite). Must contain ``reference`` and at least one
        other set.
    reference : str
        Name of the in-distribution set.

    Returns
    -------
    dict
        ``{"reference": name, "kruskal": {"H", "p"}, "posthoc": [{"a", "b", "U", "p",
        "p_bonferroni"}], "n_comparisons": m, "auroc": {set: auroc}, "summary": {set:
        {"n", "median", "q1", "q3", "mean", "min", "max"}}}``; ``U`` is the statistic of
        set ``a``; ``auroc`` and ``summary`` follow the input order.

    Raises
    ------
    ValueError
        The reference is missing, there is no other set, or a set is empty or non-finite.
    """
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    if reference not in confidence_by_set:
        raise ValueError(f"reference set {reference!r} missing from {list(confidence_by_set)}")
    sets = {str(k): _finite_1d(str(k), v) for k, v in confidence_by_set.items()}
    others = [k for k in sets if k != reference]
    if not others:
        raise ValueError("need at least one out-of-distribution set beside the reference")
    pooled = np.concatenate(list(sets.values()))
    if np.all(pooled == pooled[0]):
        h, p = 0.0, 1.0
    else:
        res = stats.kruskal(*sets.values())
        h, p = float(res.statistic), float(res.pvalue)
    pairs = [(reference, o) for o in others] + list(itertools.combinations(others, 2))
    m = len(pairs)
    posthoc = []
    for a, b in pairs:
        u = stats.mannwhitneyu(sets[a], sets[b], alternative="two-sided")
        pu = float(u.pvalue)
        posthoc.append(
            {"a": a, "b": b, "U": float(u.statistic), "p": pu, "p_bonferroni": min(1.0, pu * m)}
        )
    ref = sets[reference]
    auroc = {}
    for o in others:
        y = np.r_[np.ones(ref.size), np.zeros(sets[o].size)]
        auroc[o] = float(roc_auc_score(y, np.r_[ref, sets[o]]))
    summary = {}
    for k, v in sets.items():
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        summary[k] = {
            "n": int(v.size),
            "median": float(med),
            "q1": float(q1),
            "q3": float(q3),
            "mean": float(v.mean()),
            "min": float(v.min()),
            "max": float(v.max()),
        }
    return {
        "reference": reference,
        "kruskal": {"H": h, "p": p},
        "posthoc": posthoc,
        "n_comparisons": m,
        "auroc": auroc,
        "summary": summary,
    }
