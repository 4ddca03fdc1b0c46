"""LeNet5 (LeCun et al. 1998) on 32x32 grey input, with ReLU and dropout in the head."""

from __future__ import annotations

from torch import nn

from hemalens.engine.models.spec import Classifier, ModelSpec, fc_head, he_init

__all__ = ["LeNet5"]


class LeNet5(Classifier):
    """LeNet5: two 5x5 convolution + max-pool blocks (6 and 16 channels), FC 120 -> 84 -> K.

    The trunk maps ``(N, 1, 32, 32)`` to 400 features; the head is
    ``Linear(400, 120), ReLU, Dropout, Linear(120, 84), ReLU, Dropout, Linear(84, K)``.

    Parameters
    ----------
    spec : ModelSpec
        ``arch == "lenet5"``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        if spec.arch != "lenet5":
            raise ValueError(f"LeNet5 needs a lenet5 spec, got {spec.arch!r}")
        super().__init__(spec)
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),  # 32 -> 28
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # -> 10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 5
        )
        self.classifier = fc_head([16 * 5 * 5, 120, 84], spec.n_classes, spec.dropout)
        he_init(self)
