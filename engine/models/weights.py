"""Model weights as plain named arrays (one per ``state_dict`` entry): no pickles anywhere."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from hemalens.engine.models.spec import Classifier, ModelSpec

__all__ = ["model_from_arrays", "state_to_arrays"]


def state_to_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Copy a model's ``state_dict`` into numpy arrays.

    Parameters
    ----------
    model : torch.nn.Module
        Any module (on any device).

    Returns
    -------
    dict of str to numpy.ndarray
        ``state_dict`` key -> a copy of the tensor; floating tensors as float32, others
        (e.g. integer buffers) in their own dtype.
    """
    out: dict[str, np.ndarray] = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float32)
        out[name] = t.numpy().copy()
    return out


def model_from_arrays(spec: ModelSpec, arrays: Mapping[str, np.ndarray]) -> Classifier:
    """Build a model of ``spec`` and load weights from named arrays.

    Parameters
    ----------
    spec : ModelSpec
        The architecture.
    arrays : mapping of str to numpy.ndarray
        As returned by :func:`state_to_arrays` (or read from a project file).

    Returns
    -------
    Classifier
        The model on the CPU, in eval mode.

    Raises
    ------
    ValueError
        Missing or unexpected names, or shapes that do not fit ``spec``.
    """
    from hemalens.engine.models import build_model  # the package imports this module

    model = build_model(spec)
    want = model.state_dict()
    missing = sorted(set(want) - set(arrays))
    unexpected = sorted(set(arrays) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit a {spec.arch} model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    state: dict[str, torch.Tensor] = {}
    for name, ref in want.items():
        a = np.asarray(arrays[name])
        if tuple(a.shape) != tuple(ref.shape):
            raise ValueError(
                f"weight {name!r} has shape {tuple(a.shape)}, expected {tuple(ref.shape)}"
            )
        state[name] = torch.from_numpy(np.ascontiguousarray(a)).to(ref.dtype)
    model.load_state_dict(state, strict=True)
    return model.eval()
