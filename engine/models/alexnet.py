"""AlexNet from ``torchvision`` (random init), head rebuilt for K classes and MC dropout."""

from __future__ import annotations

import torch
from torchvision.models import alexnet as tv_alexnet

from hemalens.engine.models.spec import Classifier, ModelSpec, fc_head, he_init

__all__ = ["AlexNet"]


class AlexNet(Classifier):
    """torchvision's AlexNet: ``features`` + ``avgpool`` (6x6) + flatten as the trunk.

    torchvision puts dropout *before* its hidden FC layers; here the head is rebuilt as
    ``Linear(9216, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, K)``
    so that dropout follows each hidden FC (paper 1, §3.2) and the trunk has none. Nothing
    is pretrained; all layers get :func:`he_init`.

    Parameters
    ----------
    spec : ModelSpec
        ``arch == "alexnet"``; any ``input_size >= 63`` (the adaptive pool makes the trunk
        output 9216 features for every size).
    """

    def __init__(self, spec: ModelSpec) -> None:
        if spec.arch != "alexnet":
            raise ValueError(f"AlexNet needs an alexnet spec, got {spec.arch!r}")
        super().__init__(spec)
        tv = tv_alexnet(weights=None)
        self.features = tv.features
        self.avgpool = tv.avgpool
        in_features = tv.classifier[1].in_features  # 256 * 6 * 6
        hidden = tv.classifier[4].out_features  # 4096
        self.classifier = fc_head([in_features, hidden, hidden], spec.n_classes, spec.dropout)
        he_init(self)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - see Classifier.trunk
        return torch.flatten(self.avgpool(self.features(x)), 1)
