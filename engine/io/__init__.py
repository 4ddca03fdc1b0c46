"""Input readers: phase stacks, holograms, QLSI interferograms and colour crops.

The segmentation pipeline and the CLI use :class:`InputSpec`, :func:`read_manifest`,
:func:`detect_modality` and :func:`open_source`; every source yields float32 phase in
radians (or uint8 RGB) one frame at a time.
"""

from __future__ import annotations

from hemalens.engine.io.hologram import (
    HologramSettings,
    OffAxisRetriever,
    carrier_strength,
    remove_tilt,
    retrieve_qlsi,
)
from hemalens.engine.io.metadata import FileMetadata
from hemalens.engine.io.rgb import to_rgb8
from hemalens.engine.io.sources import FrameSource, detect_modality, open_source
from hemalens.engine.io.spec import MODALITIES, InputSpec, Modality, make_spec, read_manifest

__all__ = [
    "MODALITIES",
    "FileMetadata",
    "FrameSource",
    "HologramSettings",
    "InputSpec",
    "Modality",
    "OffAxisRetriever",
    "carrier_strength",
    "detect_modality",
    "make_spec",
    "open_source",
    "read_manifest",
    "remove_tilt",
    "retrieve_qlsi",
    "to_rgb8",
]
