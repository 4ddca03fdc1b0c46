"""Visual explanations of classifier decisions and meta-explanations over many cells.

- :mod:`~hemalens.engine.explain.methods`: one entry point, :func:`explain_cells`, for the
  LIME ensemble over four SLIC segmentations (:mod:`.lime_ensemble`) and the gradient family
  and occlusion via captum (:mod:`.gradients`); maps at patch resolution.
- :mod:`~hemalens.engine.explain.meta`: aggregation by label x confidence bin, t-SNE +
  k-means clustering of maps (paper 1, Figs. 6-7).
- :mod:`~hemalens.engine.explain.render`: diverging overlays (positive blue, negative red)
  and the meta-explanation figures.
- :mod:`~hemalens.engine.explain.store`: the per-model, per-method cache in the project.
"""

from __future__ import annotations

from hemalens.engine.explain.gradients import NotApplicable
from hemalens.engine.explain.meta import (
    ClusterResult,
    MetaGrid,
    aggregate_by_confidence,
    cluster_explanations,
)
from hemalens.engine.explain.methods import (
    METHODS,
    ExplanationResult,
    explain_cells,
    methods_for,
    predicted_classes,
)
from hemalens.engine.explain.render import cluster_png, meta_grid_png, overlay_png, overlay_rgba
from hemalens.engine.explain.store import (
    cached_cells,
    drop_explanations,
    read_explanations,
    write_explanations,
)

__all__ = [
    "METHODS",
    "ClusterResult",
    "ExplanationResult",
    "MetaGrid",
    "NotApplicable",
    "aggregate_by_confidence",
    "cached_cells",
    "cluster_explanations",
    "cluster_png",
    "drop_explanations",
    "explain_cells",
    "meta_grid_png",
    "methods_for",
    "overlay_png",
    "overlay_rgba",
    "predicted_classes",
    "read_explanations",
    "write_explanations",
]
