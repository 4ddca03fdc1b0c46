"""Manual Projective Latent Interventions (PLI; Hinterreiter et al. 2020).

A person selects cells in the 2-D map and moves them: shift by a vector, contract towards
the selection's centre, or rotate about it. The edits, applied in order, give a target
position for every moved cell; training then pulls the network's 2-D projection of those
cells towards their targets with :func:`pli_loss` (the L1 term of PALI, paper 2 eq. 5,
with manual rather than automatic interventions).

Targets file (``--pli-targets FILE``), JSON written atomically::

    {
      "version": 1,
      "format": "hemalens-pli-targets",
      "cell_ids": [ ... N int cell ids, in map order ... ],
      "points":  [[x, y], ...],      # the 2-D map the edits were made on (N rows)
      "targets": [[x, y], ...],      # edited positions (N rows; = points where not moved)
      "mask":    [true, false, ...], # moved by at least one edit (N)
      "edits":   [ {"kind": "shift", "cells": [ids], "vector": [dx, dy]},
                   {"kind": "contract", "cells": [ids], "factor": f},
                   {"kind": "rotate", "cells": [ids], "angle": radians}, ... ]
    }

A reader that only needs the loss uses ``cell_ids``, ``targets`` and ``mask``
(:func:`load_targets`); ``points`` and ``edits`` let the GUI reopen the session.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemalens.engine.errors import InputError
from hemalens.engine.project.atomic import atomic_write

__all__ = ["KINDS", "PLIEdit", "PLISession", "load_targets", "pli_loss"]

KINDS = ("shift", "contract", "rotate")
FORMAT = "hemalens-pli-targets"
VERSION = 1
#: Most expansion of a "contract" edit: spread × (1 - factor) = × 4.
MIN_FACTOR = -3.0
_ATOL = 1e-6  # map units; stored targets must match the replayed edits this closely


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # own copy, then read-only: the edit is immutable
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class PLIEdit:
    """One manual intervention on a selection of cells.

    Parameters
    ----------
    cells : array-like of int
        Cell ids of the selection (row indices when the session has no cell ids);
        non-empty, duplicates are dropped.
    kind : {"shift", "contract", "rotate"}
        The transform.
    vector : array-like, shape (2,)
        Shift in 2-D map units (``kind="shift"``).
    factor : float
        Contraction in [-3, 1] towards the selection centre: 0 leaves it, 1 puts every
        selected cell on the centre, a negative factor expands the selection (-1 doubles
        its spread) (``kind="contract"``).
    angle : float
        Counter-clockwise rotation in radians about the selection centre
        (``kind="rotate"``).
    """

    cells: np.ndarray
    kind: str
    vector: np.ndarray = field(default_factory=lambda: np.zeros(2))
    factor: float = 0.0
    angle: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"edit kind must be one of {KINDS}, got {self.kind!r}")
        cells = np.asarray(self.cells)
        if cells.ndim != 1 or cells.size == 0:
            raise ValueError("an edit needs a non-empty 1-D selection of cells")
        if not (np.issubdtype(cells.dtype, np.integer) or np.all(np.mod(cells, 1) == 0)):
            raise ValueError("edit cells must be integer cell ids")
        object.__setattr__(self, "cells", _frozen(np.unique(cells.astype(np.int64))))
        vector = np.asarray(self.vector, dtype=np.float64)
        if vector.shape != (2,) or not np.isfinite(vector).all():
            raise ValueError(f"shift vector must be 2 finite numbers, got {self.vector!r}")
        object.__setattr__(self, "vector", _frozen(vector))
        factor, angle = float(self.factor), float(self.angle)
        if not MIN_FACTOR <= factor <= 1.0:
            raise ValueError(f"contract factor must be in [{MIN_FACTOR:g}, 1], got {self.factor}")
        if not math.isfinite(angle):
            raise ValueError(f"rotation angle must be finite, got {self.angle}")
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "angle", angle)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PLIEdit) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def is_identity(self) -> bool:
        """True when the edit moves nothing (zero shift, factor 0 or angle 0)."""
        if self.kind == "shift":
            return not self.vector.any()
        return (self.factor if self.kind == "contract" else self.angle) == 0.0

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform the selection's current positions.

        Parameters
        ----------
        points : np.ndarray
            ``(k, 2)`` current positions of the selected cells.

        Returns
        -------
        np.ndarray
            ``(k, 2)`` new positions.
        """
        points = np.asarray(points, dtype=np.float64)
        if self.is_identity:  # exact: rounding must not mark unmoved cells as moved
            return points.copy()
        if self.kind == "shift":
            return points + self.vector
        centre = points.mean(axis=0)
        if self.kind == "contract":
            return centre + (1.0 - self.factor) * (points - centre)
        c, s = math.cos(self.angle), math.sin(self.angle)
        return centre + (points - centre) @ np.array([[c, s], [-s, c]])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: kind, cells and only the parameter of that kind."""
        out: dict[str, Any] = {"kind": self.kind, "cells": [int(c) for c in self.cells]}
        if self.kind == "shift":
            out["vector"] = [float(v) for v in self.vector]
        elif self.kind == "contract":
            out["factor"] = self.factor
        else:
            out["angle"] = self.angle
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PLIEdit:
        """Rebuild an edit from :meth:`to_dict` output.

        Parameters
        ----------
        d : dict
            ``{"kind": ..., "cells": [...], "vector"|"factor"|"angle": ...}``.

        Returns
        -------
        PLIEdit
            The edit.

        Raises
        ------
        ValueError
            Missing or invalid fields.
        """
        if not isinstance(d, dict) or "kind" not in d or "cells" not in d:
            raise ValueError("an edit needs 'kind' and 'cells'")
        param = {"shift": "vector", "contract": "factor", "rotate": "angle"}.get(d["kind"])
        if param is not None and param not in d:
            raise ValueError(f"a {d['kind']} edit needs '{param}'")
        kwargs = {param: d[param]} if param is not None else {}
        return cls(cells=np.asarray(d["cells"]), kind=d["kind"], **kwargs)


class PLISession:
    """Manual edits on one 2-D map, with undo, targets and a JSON file.

    Parameters
    ----------
    points : array-like
        ``(N, 2)`` base map positions.
    cell_ids : array-like of int, optional
        ``(N,)`` unique ids of the rows; default ``0 .. N-1`` (edits then name rows).
    """

    def __init__(self, points: Any, cell_ids: Any = None) -> None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {points.shape}")
        if not np.isfinite(points).all():
            raise ValueError("points have NaN or infinite values")
        ids = np.arange(len(points)) if cell_ids is None else np.asarray(cell_ids)
        if ids.shape != (len(points),):
            raise ValueError(f"cell_ids must have shape ({len(points)},), got {ids.shape}")
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("cell_ids must be unique")
        self.points = _frozen(points)
        self.cell_ids = _frozen(ids)
        self._row = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        self._edits: list[PLIEdit] = []

    @property
    def edits(self) -> tuple[PLIEdit, ...]:
        """The edits in the order they apply."""
        return tuple(self._edits)

    def rows(self, edit: PLIEdit) -> np.ndarray:
        """Row indices of an edit's cells.

        Parameters
        ----------
        edit : PLIEdit
            An edit whose cells are ids of this session.

        Returns
        -------
        np.ndarray
            int64 row indices.

        Raises
        ------
        ValueError
            Some cell ids are not in the map.
        """
        missing = [int(c) for c in edit.cells if int(c) not in self._row]
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise ValueError(f"{len(missing)} selected cell id(s) are not in the map: {shown}")
        return np.array([self._row[int(c)] for c in edit.cells], dtype=np.int64)

    def add(self, edit: PLIEdit) -> None:
        """Append an edit (its cells must be in the map).

        Parameters
        ----------
        edit : PLIEdit
            The next edit.
        """
        if not isinstance(edit, PLIEdit):
            raise TypeError(f"expected a PLIEdit, got {type(edit).__name__}")
        self.rows(edit)
        self._edits.append(edit)

    def with_edits(self, edits: Any) -> PLISession:
        """Return a session on the same map holding ``edits`` (this one is unchanged).

        Cheap: the points, ids and their index are shared, not copied (they are
        read-only), so a view can keep an older session for a background save.

        Parameters
        ----------
        edits : iterable of PLIEdit
            The edits of the new session, in order.

        Returns
        -------
        PLISession
        """
        new = object.__new__(PLISession)
        new.points, new.cell_ids, new._row = self.points, self.cell_ids, self._row
        new._edits = []
        for e in edits:
            new.add(e)
        return new

    def undo(self) -> PLIEdit | None:
        """Remove and return the last edit (``None`` when there is none)."""
        return self._edits.pop() if self._edits else None

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Apply the edits in order, each to the current positions of its selection.

        Returns
        -------
        targets : np.ndarray
            ``(N, 2)`` float64 edited positions (base positions where nothing moved).
        mask : np.ndarray
            ``(N,)`` bool, True for rows moved by at least one edit.
        """
        current = np.array(self.points)
        mask = np.zeros(len(current), dtype=bool)
        for edit in self._edits:
            rows = self.rows(edit)
            new = edit.apply(current[rows])
            mask[rows] |= np.any(new != current[rows], axis=1)
            current[rows] = new
        return current, mask

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document of the targets file (see the module docstring)."""
        targets, mask = self.targets()
        return {
            "version": VERSION,
            "format": FORMAT,
            "cell_ids": [int(c) for c in self.cell_ids],
            "points": self.points.tolist(),
            "targets": targets.tolist(),
            "mask": [bool(m) for m in mask],
            "edits": [e.to_dict() for e in self._edits],
        }

    def save(self, path: str | PathLike[str]) -> None:
        """Write the targets file atomically (temporary file beside, then ``os.replace``).

        Parameters
        ----------
        path : str or PathLike
            Destination ``.json``.
        """
        text = json.dumps(self.to_dict(), allow_nan=False)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | PathLike[str]) -> PLISession:
        """Reopen a session saved with :meth:`save`.

        Parameters
        ----------
        path : str or PathLike
            A targets file.

        Returns
        -------
        PLISession
            Base points, cell ids and edits as saved.

        Raises
        ------
        InputError
            Missing, unreadable, not JSON, foreign, of a newer version, or inconsistent
            (stored targets differ from the replayed edits); the message names the file.
        """
        doc = _read_doc(path)
        try:
            session = cls(doc["points"], doc["cell_ids"])
            for d in doc["edits"]:
                session.add(PLIEdit.from_dict(d))
            targets, mask = session.targets()
            stored_t = np.asarray(doc["targets"], dtype=np.float64)
            stored_m = np.asarray(doc["mask"], dtype=bool)
        except (ValueError, TypeError, KeyError) as err:
            raise InputError(path, f"invalid PLI targets file: {err}") from None
        if stored_t.shape != targets.shape or stored_m.shape != mask.shape:
            raise InputError(path, "targets or mask do not have one row per cell")
        if not np.allclose(stored_t, targets, rtol=0, atol=_ATOL) or not np.array_equal(
            stored_m, mask
        ):
            raise InputError(path, "stored targets do not match its edits (file was altered)")
        return session


def _read_doc(path: str | PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read PLI targets: {err}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(path, "not a HemaLens PLI targets file")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise InputError(path, f"PLI targets version {version!r} is not supported "
                               f"(this HemaLens reads up to {VERSION})")
    missing = [k for k in ("cell_ids", "points", "targets", "mask", "edits") if k not in doc]
    if missing:
        raise InputError(path, f"PLI targets file lacks {', '.join(missing)}")
    return doc


def load_targets(path: str | PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read what training needs from a targets file.

    Parameters
    ----------
    path : str or PathLike
        A file written by :meth:`PLISession.save`.

    Returns
    -------
    cell_ids : np.ndarray
        ``(N,)`` int64.
    targets : np.ndarray
        ``(N, 2)`` float64.
    mask : np.ndarray
        ``(N,)`` bool, True where a target differs from the map (moved cells).

    Raises
    ------
    InputError
        As :meth:`PLISession.load`.
    """
    session = PLISession.load(path)
    targets, mask = session.targets()
    return np.array(session.cell_ids), targets, mask


def pli_loss(
    y2d: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean L1 distance between projected and target positions of the moved cells.

    ``sum_i m_i w_i |y_i - t_i|_1 / sum_i m_i``: each cell's L1 distance (summed over
    the two map axes) is multiplied by its weight (e.g. the class weight
    ``N / (|M| N_c)`` of paper 2, which scales both positions before the distance) and
    averaged over the masked cells. No masked cell gives 0 (still attached to the graph).

    Parameters
    ----------
    y2d : torch.Tensor
        ``(B, 2)`` projections (e.g. ``ParametricTSNE.module(embedding)``), differentiable.
    target : torch.Tensor
        ``(B, 2)`` target positions.
    mask : torch.Tensor
        ``(B,)`` bool, which rows have a target.
    weights : torch.Tensor, optional
        ``(B,)`` non-negative per-cell weights.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    if y2d.ndim != 2 or y2d.shape[1] != 2 or target.shape != y2d.shape:
        raise ValueError(f"y2d and target must both be (B, 2), got {tuple(y2d.shape)} "
                         f"and {tuple(target.shape)}")
    mask = mask.to(device=y2d.device, dtype=torch.bool)
    if mask.shape != (y2d.shape[0],):
        raise ValueError(f"mask must be ({y2d.shape[0]},), got {tuple(mask.shape)}")
    dist = (y2d - target.to(y2d)).abs().sum(dim=1)
    if weights is not None:
        weights = weights.to(y2d)
        if weights.shape != dist.shape:
            raise ValueError(f"weights must be ({y2d.shape[0]},), got {tuple(weights.shape)}")
        dist = dist * weights
    n = mask.sum()
    if int(n) == 0:
        return (y2d * 0).sum()
    return dist[mask].sum() / n
