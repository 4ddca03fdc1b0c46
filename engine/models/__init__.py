"""Classifiers (LeNet5, AlexNet) and their storage in the project file.

``build_model(spec)`` makes a fresh, randomly initialised :class:`Classifier`;
:mod:`~hemalens.engine.models.weights` turns weights into named arrays and back;
:mod:`~hemalens.engine.models.store` keeps trained models in the project under ``/models``.
"""

from __future__ import annotations

from typing import Any

from hemalens.engine.models.lenet5 import LeNet5
from hemalens.engine.models.spec import (
    ARCHITECTURES,
    DEFAULT_DROPOUT,
    DEFAULT_INPUT_SIZE,
    Classifier,
    ModelSpec,
    import_torchvision,
)
from hemalens.engine.models.store import (
    delete_model,
    list_models,
    load_model,
    save_model,
    set_active_model,
    update_model,
)
from hemalens.engine.models.weights import model_from_arrays, state_to_arrays

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_DROPOUT",
    "DEFAULT_INPUT_SIZE",
    "AlexNet",
    "Classifier",
    "LeNet5",
    "ModelSpec",
    "build_model",
    "delete_model",
    "list_models",
    "load_model",
    "model_from_arrays",
    "save_model",
    "set_active_model",
    "state_to_arrays",
    "update_model",
]



def _alexnet_class() -> type[Classifier]:
    """Import :class:`AlexNet` on first use: torchvision is heavy, and optional in a build.

    The standalone CPU build may ship without torchvision (see ``installer/README.md``);
    LeNet5 works there and AlexNet is refused with one line.
    """
    import_torchvision("alexnet", "--arch lenet5")
    from hemalens.engine.models.alexnet import AlexNet

    return AlexNet


def __getattr__(name: str) -> Any:
    if name == "AlexNet":
        return _alexnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(spec: ModelSpec) -> Classifier:
    """Build a randomly initialised classifier (uses torch's global RNG: seed it first).

    Parameters
    ----------
    spec : ModelSpec
        Architecture and hyper-parameters.

    Returns
    -------
    Classifier
        :class:`LeNet5` or :class:`AlexNet`, on the CPU, in training mode.
    """
    if spec.arch == "alexnet":
        return _alexnet_class()(spec)
    return LeNet5(spec)
