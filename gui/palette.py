"""Colours for classes and review decisions that people with colour-vision deficiency tell apart.

Classes take the Okabe-Ito palette (Okabe & Ito 2008, the usual choice for CVD-safe
categorical colours), then Paul Tol's "muted" scheme for more than seven classes (the
marrow project has fifteen); past sixteen, colours repeat and the border pattern tells
them apart. Decisions are marked by a symbol as well as a colour.
"""

from __future__ import annotations

from PySide6.QtGui import QColor

__all__ = ["DECISION_MARKS", "class_colour", "class_colours"]

_OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
_TOL_MUTED = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99",
              "#999933", "#AA4499")
_PALETTE = _OKABE_ITO + _TOL_MUTED
#: No prediction / unknown class.
NONE_COLOUR = QColor("#9E9E9E")

#: Review decision -> (symbol drawn on the thumbnail, colour, words).
DECISION_MARKS: dict[str, tuple[str, str, str]] = {
    "undecided": ("", "#9E9E9E", "not decided yet"),
    "confirmed": ("✓", "#009E73", "confirmed"),
    "relabelled": ("✎", "#0072B2", "relabelled"),
    "excluded": ("✕", "#D55E00", "not classed (excluded)"),
    "unsure": ("?", "#E69F00", "unsure"),
}


def class_colour(code: int) -> QColor:
    """Return the colour of class ``code`` (grey for -1)."""
    if code < 0:
        return QColor(NONE_COLOUR)
    return QColor(_PALETTE[code % len(_PALETTE)])


def class_colours(n: int) -> list[QColor]:
    """Return the colours of classes ``0..n-1``."""
    return [class_colour(k) for k in range(n)]
