"""Segmentation settings: one frozen record, stored in the project as a plain dict."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

NORMALISATIONS = ("clip", "per_patch")
#: Cell columns the QC circularity rule may read (see ``SegmentSettings.circularity_measure``).
CIRCULARITY_MEASURES = ("circularity", "circularity_smooth")


@dataclass(frozen=True)
class SegmentSettings:
    """Parameters of thresholding, quality control, patches and normalisation.

    Defaults follow Röhrl et al. 2023 (appendix A.1-A.2): 50 px patches at 0.3 um/px,
    clip to [0.2, 4] rad, min-max to [0, 1].

    The threshold default (0.1 rad) was chosen on sphere-like profiles
    ``peak * sqrt(1 - (r/R)^2)`` with peak 0.5-4 rad and 0.03 rad noise: the mask
    ``(G_sigma * phase > t) & (phase > t)`` keeps the equivalent diameter within
    about 3 % (a 0.1 rad cut of a 0.5 rad sphere shrinks its radius by 2 %), while the
    Gaussian (sigma 1 px) lowers the noise to ~0.01 rad so t is ~10 noise sigmas and
    no noise specks appear. Thresholding the smoothed phase alone would push the edge
    of steep (high-peak) cells outwards by up to 2 sigma (+9 % diameter at 4 rad).

    Attributes
    ----------
    threshold_rad : float
        Phase threshold (rad) applied to the background-subtracted phase; the floor of
        the noise-adaptive threshold (see ``noise_k``).
    noise_k : float
        The threshold used on a block of frames is
        ``max(threshold_rad, noise_k * sigma)`` with ``sigma`` the sigma-clipped noise of
        the smoothed background (:func:`~.detect.adaptive_threshold`). On clean data the
        floor wins; on real holograms with low-frequency ripple the threshold rises above
        the ripple instead of merging it into cells. 0 disables it.
    smooth_sigma_px : float
        Gaussian sigma (px) of the pre-smoothing used for the mask only; 0 disables it.
    min_contour_area_px : int
        Contours with a smaller ``cv2.contourArea`` are noise, not objects.
    background_n : int
        Frames per median-background block.
    min_diameter_um, max_diameter_um : float
        QC bounds on the equivalent diameter (``max_diameter_um=None``: no upper bound).
    min_circularity : float
        QC bound on the circularity (paper 1: 0.85).
    circularity_measure : str
        Which circularity the QC rule ``not_round`` reads: ``"circularity"`` (paper 1,
        Table 3: ``4 pi A / L^2`` with ``L = cv2.arcLength`` of the pixel contour, the
        definition the paper's 0.85 was set for) or ``"circularity_smooth"`` (the same with
        the digitisation-corrected perimeter of
        :func:`~hemalens.engine.segment.features.robust_perimeter_px`). Default
        ``circularity_smooth``, chosen by measurement (benchmarks/RESULTS.md, issue 13):
        at 0.85 it passes 100 % of simulated in-focus leukocytes (paper's: 97.2 %) and
        both real round objects (HL60 cell 0.89, bead 0.97; paper's: 0.81 and 0.83, both
        rejected), and rejects every simulated aggregate, as the paper's does.
    reject_border : bool
        Objects touching the frame edge fail QC with reason ``border``.
    patch_size_px, patch_fov_um : int, float
        Phase patch side (px) and the physical field of view it covers (um).
    clip_min_rad, clip_max_rad : float
        Clip bounds of the phase normalisation (rad).
    normalisation : str
        ``"clip"`` (absolute: clip bounds map to 0 and 1) or ``"per_patch"``.
    rgb_patch_size_px, rgb_patch_fov_um : int, float
        RGB patch side (px) and its field of view (um).
    """

    threshold_rad: float = 0.1
    noise_k: float = 3.0
    smooth_sigma_px: float = 1.0
    min_contour_area_px: int = 20
    background_n: int = 100
    min_diameter_um: float = 4.0
    min_circularity: float = 0.85
    circularity_measure: str = "circularity_smooth"
    max_diameter_um: float | None = 20.0
    reject_border: bool = True
    patch_size_px: int = 50
    patch_fov_um: float = 15.0
    clip_min_rad: float = 0.2
    clip_max_rad: float = 4.0
    normalisation: str = "clip"
    rgb_patch_size_px: int = 96
    rgb_patch_fov_um: float = 24.0

    def __post_init__(self) -> None:
        positive = ("patch_size_px", "patch_fov_um", "background_n", "rgb_patch_size_px",
                    "rgb_patch_fov_um")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SegmentSettings.{name} must be > 0, got {value!r}")
        non_negative = ("threshold_rad", "noise_k", "smooth_sigma_px", "min_contour_area_px",
                        "min_diameter_um", "min_circularity")
        for name in non_negative:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SegmentSettings.{name} must be >= 0, got {value!r}")
        if self.max_diameter_um is not None and not self.max_diameter_um > self.min_diameter_um:
            raise ValueError(
                f"SegmentSettings.max_diameter_um ({self.max_diameter_um}) must exceed "
                f"min_diameter_um ({self.min_diameter_um}) or be None"
            )
        if not self.clip_max_rad > self.clip_min_rad:
            raise ValueError(
                f"SegmentSettings.clip_max_rad ({self.clip_max_rad}) must exceed "
                f"clip_min_rad ({self.clip_min_rad})"
            )
        if self.circularity_measure not in CIRCULARITY_MEASURES:
            raise ValueError(
                f"SegmentSettings.circularity_measure must be one of {CIRCULARITY_MEASURES}, "
                f"got {self.circularity_measure!r}"
            )
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"SegmentSettings.normalisation must be one of {NORMALISATIONS}, "
                f"got {self.normalisation!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-compatible dict.

        Returns
        -------
        dict
            Field name to value (``max_diameter_um`` may be ``None``).
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentSettings:
        """Build settings from :meth:`to_dict` output.

        Missing keys take their defaults and unknown keys are ignored, so projects
        written by other versions still load; values are validated.

        Parameters
        ----------
        d : dict
            Field name to value.

        Returns
        -------
        SegmentSettings
            The validated settings.
        """
        defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            if name not in defaults:
                continue
            if hasattr(value, "item"):  # numpy scalars, e.g. read back from HDF5
                value = value.item()
            if isinstance(value, bytes):
                value = value.decode()
            default = defaults[name]
            if value is not None and default is not None:
                value = type(default)(value)  # e.g. 50.0 -> 50 for pixel sizes
            kwargs[name] = value
        return cls(**kwargs)
