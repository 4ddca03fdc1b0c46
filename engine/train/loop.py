"""Training loop: Adam + cross-entropy, early stopping on validation macro-F1 (paper 1, §3.2).

Reproducible: a seed fixes the initialisation, the split, the batch order, the augmentation
and the dropout masks, so the same seed gives identical weights on the CPU. Batching runs
over seeded index permutations (no DataLoader, no worker processes). The caller's global
torch RNG is left as it was (``torch.random.fork_rng``).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from hemalens.engine.jobs import Progress, checkpoint, report
from hemalens.engine.models import (
    ARCHITECTURES,
    DEFAULT_DROPOUT,
    DEFAULT_INPUT_SIZE,
    Classifier,
    ModelSpec,
    build_model,
)
from hemalens.engine.train.augment import random_dihedral
from hemalens.engine.train.splits import check_split, make_split

__all__ = [
    "TrainConfig",
    "TrainResult",
    "resolve_device",
    "seeded_deterministic",
    "train_classifier",
]

_EVAL_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    """How to train a classifier.

    Attributes
    ----------
    arch : str
        ``"lenet5"`` or ``"alexnet"``.
    dropout : float or None
        Rate of every dropout layer; None -> the paper's default for ``arch``.
    input_size : int or None
        Network input side; None -> 32 (LeNet5) or 64 (AlexNet on the CPU; 224 = paper).
    epochs : int
        Most epochs to run.
    batch_size : int
        Training batch size.
    lr : float
        Adam learning rate.
    patience : int
        Stop after this many epochs without a better validation macro-F1.
    seed : int
        Seed of split, initialisation, batch order, augmentation and dropout.
    fractions : tuple of float
        Train / validation / test shares for the stratified split.
    test_donor : str or None
        Hold this donor out as the test set (see :func:`make_split`).
    augment : bool
        Random flips and 90-degree rotations of each training batch.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    """

    arch: str = "lenet5"
    dropout: float | None = None
    input_size: int | None = None
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    patience: int = 5
    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1)
    test_donor: str | None = None
    augment: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {ARCHITECTURES}")
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)
        self.spec(2)  # validates dropout and input size for the architecture

    def spec(self, n_classes: int) -> ModelSpec:
        """Return the :class:`ModelSpec` this config trains for ``n_classes`` classes.

        Parameters
        ----------
        n_classes : int
            Number of outputs.

        Returns
        -------
        ModelSpec
            With defaults filled in.
        """
        return ModelSpec(
            arch=self.arch,
            n_classes=n_classes,
            dropout=DEFAULT_DROPOUT[self.arch] if self.dropout is None else self.dropout,
            input_size=(
                DEFAULT_INPUT_SIZE[self.arch] if self.input_size is None else self.input_size
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict."""
        d = asdict(self)
        d["fractions"] = list(self.fractions)
        return d


@dataclass
class TrainResult:
    """Outcome of :func:`train_classifier`.

    Attributes
    ----------
    model : Classifier
        Weights of the best epoch, on the CPU, in eval mode.
    spec : ModelSpec
    split : dict of str to numpy.ndarray
        ``{"train", "val", "test"}`` row indices into the training arrays.
    history : list of dict
        Per epoch: ``epoch`` (1-based), ``train_loss``, ``train_accuracy``, ``val_loss``,
        ``val_accuracy``, ``val_macro_f1``, ``seconds``.
    best_epoch : int
        1-based epoch whose weights were kept.
    val_macro_f1 : float
        Validation macro-F1 of that epoch.
    seconds : float
        Wall time of the whole call.
    device : str
        Where it trained (``"cpu"``, ``"cuda:0"``).
    config : TrainConfig or None
        The configuration used.
    """

    model: Classifier
    spec: ModelSpec
    split: dict[str, np.ndarray]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    val_macro_f1: float = float("nan")
    seconds: float = 0.0
    device: str = "cpu"
    config: TrainConfig | None = None


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda[:i]"`` into a torch device.

    Parameters
    ----------
    device : str
        ``"auto"`` picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device
        The device; a CUDA device always with its index (so the RNG of exactly that device
        can be forked, see :func:`seeded_deterministic`).

    Raises
    ------
    ValueError
        An unknown device string, or CUDA asked for but not available.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"unknown device {device!r}") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"unsupported device {device!r} (use cpu or cuda)")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextlib.contextmanager
def seeded_deterministic(seed: int, dev: torch.device) -> Iterator[None]:
    """Run a training deterministically for ``seed`` without touching the caller's state.

    Torch's global RNG (and that of ``dev`` when it is a GPU) is forked and seeded, and
    deterministic algorithms are switched on (warn-only: some CUDA ops have no such kernel;
    the warnings are silenced); everything is restored on exit.

    Parameters
    ----------
    seed : int
        Seed of torch's RNG inside the block.
    dev : torch.device
        The training device (from :func:`resolve_device`).
    """
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(
            devices=[dev] if dev.type == "cuda" else []
        ):
            warnings.filterwarnings("ignore", message=".*does not have a deterministic.*")
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def _check_inputs(images: Any, labels: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images)
    y = np.asarray(labels)
    if x.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("no cells to train on (empty input)")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"images must be numeric, got {x.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels have shape {y.shape}, expected ({x.shape[0]},)")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class codes, got {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    bad = np.flatnonzero(~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{bad.size} patch(es) contain NaN or infinite values (rows {bad[:5].tolist()}"
            f"{' ...' if bad.size > 5 else ''}); QC should have rejected them"
        )
    present = np.unique(y)
    if present.size < 2:
        raise ValueError(
            f"all {y.size} cells have the same class (code {int(present[0])}); "
            "training needs at least two classes"
        )
    return x.astype(np.float32, copy=False), y.astype(np.int64)


@torch.no_grad()
def _evaluate(
    model: Classifier, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, progress: Progress | None
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and predicted classes of rows ``idx`` (eval mode)."""
    model.eval()
    total, preds = 0.0, []
    for s in range(0, idx.size, _EVAL_BATCH):
        checkpoint(progress)
        rows = torch.from_numpy(idx[s : s + _EVAL_BATCH]).to(x.device)
        logits = model(model.preprocess(x[rows]))
        total += float(nn.functional.cross_entropy(logits, y[rows], reduction="sum"))
        preds.append(logits.argmax(1).cpu().numpy())
    return total / max(idx.size, 1), np.concatenate(preds) if preds else np.zeros(0, int)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    *,
    split: dict[str, np.ndarray] | None = None,
    donors: np.ndarray | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a classifier on normalised patches.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W)`` patches in [0, 1] (e.g. from :func:`training_data`).
    labels : numpy.ndarray
        ``(N,)`` class codes in ``0..n_classes-1``.
    n_classes : int
        Number of classes K (model outputs).
    config : TrainConfig
        Architecture, optimiser, stopping, seed, device.
    split : dict, optional
        ``{"train", "val"[, "test"]}`` row indices; default :func:`make_split` with the
        config's seed, fractions and test donor.
    donors : numpy.ndarray, optional
        Donor of each row (for ``config.test_donor``).
    progress : Progress, optional
        ``set_progress(epoch, epochs)`` after each epoch; cancellation is checked before
        every batch and raises :class:`~hemalens.engine.jobs.Cancelled`.

    Returns
    -------
    TrainResult
        The model of the best validation epoch (restored), the split and the history.

    Raises
    ------
    ValueError
        Empty input, one class only, NaN/inf patches, labels out of range, a bad split
        or an unavailable device.
    Cancelled
        The caller cancelled; nothing is kept.
    """
    t_start = time.perf_counter()
    x_np, y_np = _check_inputs(images, labels, n_classes)
    spec = config.spec(n_classes)
    if split is None:
        split = make_split(
            y_np, seed=config.seed, fractions=config.fractions, donors=donors,
            test_donor=config.test_donor,
        )
    split = check_split(split, y_np.size)
    if np.unique(y_np[split["train"]]).size < 2:
        raise ValueError("the training split holds a single class; training needs two")
    dev = resolve_device(config.device)
    if progress is not None:
        progress.set_status(f"Training {spec.arch} on {split['train'].size} cells ({dev})")
        progress.set_progress(0, config.epochs)

    with seeded_deterministic(config.seed, dev):
        result = _fit(x_np, y_np, spec, config, split, dev, progress)
    result.seconds = time.perf_counter() - t_start
    return result


def _fit(
    x_np: np.ndarray,
    y_np: np.ndarray,
    spec: ModelSpec,
    config: TrainConfig,
    split: dict[str, np.ndarray],
    dev: torch.device,
    progress: Progress | None,
) -> TrainResult:
    rng = np.random.default_rng(config.seed)
    model = build_model(spec).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    x = torch.from_numpy(x_np).to(dev)
    y = torch.from_numpy(y_np).to(dev)
    train_idx, val_idx = split["train"], split["val"]
    y_val = y_np[val_idx]
    history: list[dict] = []
    best_f1, best_epoch, wait = -1.0, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct = 0.0, 0
        order = rng.permutation(train_idx)
        for s in range(0, order.size, config.batch_size):
            checkpoint(progress)
            rows = torch.from_numpy(order[s : s + config.batch_size]).to(dev)
            xb = x[rows]
            if config.augment:
                xb = random_dihedral(xb, rng)
            logits = model(model.preprocess(xb))
            loss = nn.functional.cross_entropy(logits, y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * rows.numel()
            correct += int((logits.argmax(1) == y[rows]).sum())
        val_loss, pred = _evaluate(model, x, y, val_idx, progress)
        f1 = float(f1_score(y_val, pred, average="macro", zero_division=0))
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / train_idx.size,
                "train_accuracy": correct / train_idx.size,
                "val_loss": val_loss,
                "val_accuracy": float(np.mean(pred == y_val)),
                "val_macro_f1": f1,
                "seconds": time.perf_counter() - t0,
            }
        )
        report(progress, {"kind": "epoch", **history[-1]})
        if progress is not None:
            progress.set_progress(epoch, config.epochs)
            progress.set_status(f"Epoch {epoch}/{config.epochs}: validation macro-F1 {f1:.3f}")
        if f1 > best_f1:
            best_f1, best_epoch, wait = f1, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            wait += 1
            if wait >= config.patience:
                break
    assert best_state is not None  # at least one epoch ran
    model.load_state_dict(best_state)
    model = model.to("cpu").eval()
    return TrainResult(
        model=model,
        spec=spec,
        split=split,
        history=history,
        best_epoch=best_epoch,
        val_macro_f1=best_f1,
        device=str(dev),
        config=config,
    )
