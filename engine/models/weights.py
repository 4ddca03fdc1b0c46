"""Model weights as plain named arrays (one per ``state_dict`` entry): no pickles anywhere.

In the project file they are a ``weights`` group with one float32 (or integer) dataset per
``state_dict`` entry; :func:`write_weights` / :func:`read_weights` are the one way to store
and read them, for classifiers (``/models``) and embedding networks (``/embeddings``) alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import h5py
import numpy as np
import torch

from hemalens.engine.models.spec import Classifier, ModelSpec

M = TypeVar("M", bound=torch.nn.Module)

__all__ = ["expected_shapes", "load_arrays", "model_from_arrays", "read_weights",
           "state_to_arrays", "write_weights"]


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

    return load_arrays(build_model(spec), arrays, what=f"a {spec.arch} model")


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of a module's ``state_dict`` entries (to check stored weights before reading)."""
    return {k: tuple(t.shape) for k, t in module.state_dict().items()}


def load_arrays(module: M, arrays: Mapping[str, np.ndarray], *, what: str = "the model") -> M:
    """Load named arrays into ``module`` (strictly: every name, every shape).

    Parameters
    ----------
    module : torch.nn.Module
        A freshly built module of the right architecture.
    arrays : mapping of str to numpy.ndarray
        As returned by :func:`state_to_arrays` or :func:`read_weights`.
    what : str
        What the module is, for the error message.

    Returns
    -------
    torch.nn.Module
        ``module`` itself, loaded, in eval mode.

    Raises
    ------
    ValueError
        Missing or unexpected names, or shapes that do not fit.
    """
    model = module
    want = model.state_dict()
    missing = sorted(set(want) - set(arrays))
    unexpected = sorted(set(arrays) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit {what}: missing {missing[:5]}, unexpected {unexpected[:5]}"
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


def write_weights(group: h5py.Group, arrays: Mapping[str, np.ndarray]) -> h5py.Group:
    """Write named arrays as the ``weights`` subgroup of ``group`` (one dataset each).

    Parameters
    ----------
    group : h5py.Group
        The model's group, e.g. ``/models/<name>``; must not have ``weights`` yet.
    arrays : mapping of str to numpy.ndarray
        As returned by :func:`state_to_arrays`.

    Returns
    -------
    h5py.Group
        The new ``weights`` group.
    """
    weights = group.create_group("weights")
    for key, arr in arrays.items():
        weights.create_dataset(key, data=arr)
    return weights


def read_weights(group: h5py.Group, expected: Mapping[str, tuple[int, ...]] | None = None
                 ) -> dict[str, np.ndarray]:
    """Read the named arrays of ``group["weights"]`` (see :func:`write_weights`).

    Parameters
    ----------
    group : h5py.Group
        The model's group.
    expected : mapping of str to tuple of int, optional
        The shapes the model needs (``{k: tuple(t.shape) for k, t in state_dict()}``):
        names and declared shapes are checked before anything is read, so a damaged file
        declaring absurd shapes is refused instead of allocated.

    Returns
    -------
    dict of str to numpy.ndarray
        ``state_dict`` key -> array.

    Raises
    ------
    KeyError
        ``group`` has no ``weights``.
    ValueError
        Names or declared shapes that do not fit ``expected``.
    """
    datasets = dict(group["weights"].items())
    if expected is not None:
        missing = sorted(set(expected) - set(datasets))
        unexpected = sorted(set(datasets) - set(expected))
        if missing or unexpected:
            raise ValueError(f"weights do not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for key, ds in datasets.items():
            if not isinstance(ds, h5py.Dataset) or tuple(ds.shape) != tuple(expected[key]):
                shape = getattr(ds, "shape", None)
                raise ValueError(f"weight {key!r} is declared {shape}, expected "
                                 f"{tuple(expected[key])}")
    return {key: ds[()] for key, ds in datasets.items()}
