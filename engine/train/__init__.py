"""Training of the classifiers: splits, augmentation, the loop, the project's training data.

``save_model`` / ``load_model`` (the project's ``/models``) live in
:mod:`hemalens.engine.models.store` and are re-exported here for convenience.
"""

from __future__ import annotations

from hemalens.engine.models.store import list_models, load_model, save_model
from hemalens.engine.train.augment import random_dihedral
from hemalens.engine.train.data import stable_split, training_data
from hemalens.engine.train.loop import TrainConfig, TrainResult, resolve_device, train_classifier
from hemalens.engine.train.splits import SPLIT_NAMES, check_split, make_split, stable_parts

__all__ = [
    "SPLIT_NAMES",
    "TrainConfig",
    "TrainResult",
    "check_split",
    "list_models",
    "load_model",
    "make_split",
    "stable_parts",
    "stable_split",
    "random_dihedral",
    "resolve_device",
    "save_model",
    "train_classifier",
    "training_data",
]
