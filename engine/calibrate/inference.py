"""Frequentist and MC-dropout inference over patch stacks (paper 1, §3.2).

Models follow the classifier protocol of ``engine.models``: ``preprocess(patches)`` turns
``(N, H, W)`` patches in [0, 1] into network input, ``trunk(x)`` is the deterministic part
(convolutions, flatten; no dropout), ``head(f)`` the fully connected part with dropout,
``forward(x) = head(trunk(x))``.

MC dropout puts only dropout modules (every ``nn.Dropout`` variant) in training mode;
BatchNorm and everything else stay in eval mode, and every module's mode is restored
afterwards, also on errors and cancellation. Because dropout sits only in the head, the
trunk is computed once per batch and the head sampled ``T`` times (``cached_trunk``):
the same distribution as ``T`` full passes at a fraction of the cost. For an
``engine.models.Classifier`` whose head is an ``nn.Sequential``, the layers before its
first dropout (e.g. AlexNet's 9216 -> 4096 FC + ReLU) are deterministic too and computed
once as well.

Sampling is seeded inside ``torch.random.fork_rng``: the caller's global RNG state is
untouched, and a run is reproducible for the same seed, batch size and device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np
import torch
from torch import nn

from hemalens.engine.jobs import Progress, checkpoint

#: Every dropout flavour torch ships; only these become stochastic under MC dropout.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
#: Upper bound (elements) of the head input replicated over several passes at once.
HEAD_BLOCK_ELEMENTS = 1 << 22


# -- mode handling -------------------------------------------------------------------------


@contextlib.contextmanager
def _modes(model: nn.Module, *, dropout_active: bool) -> Iterator[None]:
    """Eval mode everywhere, dropout modules optionally in train mode; restore on exit."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        if dropout_active:
            for m in model.modules():
                if isinstance(m, DROPOUT_TYPES):
                    m.training = True
        yield
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the generator dropout draws from, restoring the global state on exit."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield


@contextlib.contextmanager
def _dropout_watch(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Record dropout modules that run inside the block (to prove the trunk has none)."""
    fired: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: fired.append(mod))
        for m in model.modules()
        if isinstance(m, DROPOUT_TYPES)
    ]
    try:
        yield fired
    finally:
        for h in handles:
            h.remove()


# -- inputs --------------------------------------------------------------------------------


def _check_patches(patches) -> tuple[np.ndarray | torch.Tensor, int]:
    """Validate a patch stack; other array-likes (lists, HDF5 datasets) are loaded."""
    if not isinstance(patches, np.ndarray | torch.Tensor):
        patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim not in (3, 4):
        raise ValueError(f"patches must have shape (N, H, W), got {tuple(patches.shape)}")
    if patches.shape[0] == 0:
        return patches, 0
    finite = (
        torch.isfinite(patches).flatten(1).all(1).cpu().numpy()
        if isinstance(patches, torch.Tensor)
        else np.isfinite(patches.reshape(len(patches), -1)).all(1)
    )
    if not finite.all():
        bad = np.flatnonzero(~finite)
        listed = ", ".join(map(str, bad[:5])) + (" ..." if bad.size > 5 else "")
        raise ValueError(
            f"{bad.size} patch(es) contain NaN or infinite values (indices {listed}); "
            "exclude QC-failed cells before inference"
        )
    return patches, int(patches.shape[0])


def _resolve_device(model: nn.Module, device) -> torch.device:
    if device is None:
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
    dev = torch.device(device)
    model.to(dev)  # in place, as nn.Module.to always is
    return dev


def _batch(patches, start: int, stop: int, device: torch.device) -> torch.Tensor:
    chunk = patches[start:stop]
    if isinstance(chunk, np.ndarray):
        chunk = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
    return chunk.to(device=device, dtype=torch.float32)


def _prepare(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    pre = getattr(model, "preprocess", None)
    return pre(x) if pre is not None else x


def _n_classes(model: nn.Module, patches, device: torch.device) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "n_classes"):
        return int(spec.n_classes)
    probe = torch.zeros((1, *tuple(patches.shape[1:])), dtype=torch.float32, device=device)
    with _modes(model, dropout_active=False), torch.inference_mode():
        return int(model(_prepare(model, probe)).shape[-1])


def _check_batch_args(batch_size: int, passes: int = 1) -> None:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(passes) != passes or passes < 1:
        raise ValueError(f"passes must be a positive integer, got {passes!r}")


# -- frequentist ---------------------------------------------------------------------------


def predict_logits(
    model: nn.Module,
    patches: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 512,
    device=None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Deterministic logits (eval mode, no gradients), batch by batch.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier (``preprocess``, ``forward``); its modes are restored afterwards.
    patches : ndarray or torch.Tensor, shape (N, H, W)
        Normalised patches in [0, 1]; passed through ``model.preprocess`` per batch.
    batch_size : int
        Cells per forward pass.
    device : str or torch.device, optional
        Where to run; the model is moved there in place. ``None``: the model's device.
    progress : Progress, optional
        Receives ``(cells done, N)``; cancellation is checked between batches.

    Returns
    -------
    ndarray of float32, shape (N, K)

    Raises
    ------
    ValueError
        Wrong shape, NaN patches, bad batch size.
    hemalens.engine.jobs.Cancelled
        When ``progress`` asks to stop.
    """
    _check_batch_args(batch_size)
    patches, n = _check_patches(patches)
    dev = _resolve_device(model, device)
    if n == 0:
        return np.zeros((0, _n_classes(model, patches, dev)), dtype=np.float32)
    if progress is not None:
        progress.set_status("predicting")
    out: list[np.ndarray] = []
    with _modes(model, dropout_active=False), torch.inference_mode():
        for start in range(0, n, batch_size):
            checkpoint(progress)
            stop = min(start + batch_size, n)
            x = _prepare(model, _batch(patches, start, stop, dev))
            out.append(model(x).float().cpu().numpy())
            if progress is not None:
                progress.set_progress(stop, n)
    return np.concatenate(out)


# -- MC dropout ----------------------------------------------------------------------------


def _head_split(model: nn.Module) -> tuple[Callable, Callable] | None:
    """``(deterministic prefix, stochastic rest)`` of an engine.models head, if known.

    Only for ``engine.models.Classifier`` subclasses that keep the base ``head`` (which
    calls ``self.classifier``, an ``nn.Sequential``); other models return None and the
    whole head is sampled.
    """
    try:
        from hemalens.engine.models.spec import Classifier
    except ImportError:  # pragma: no cover - engine.models missing
        return None
    seq = getattr(model, "classifier", None)
    if not (
        isinstance(model, Classifier)
        and type(model).head is Classifier.head
        and isinstance(seq, nn.Sequential)
    ):
        return None
    layers = list(seq)
    first = next((i for i, m in enumerate(layers) if isinstance(m, DROPOUT_TYPES)), None)
    if not first:  # no dropout, or dropout first: nothing to precompute
        return None
    return nn.Sequential(*layers[:first]), nn.Sequential(*layers[first:])


def _sample_head(rest: Callable, h: torch.Tensor, passes: int, progress) -> np.ndarray:
    """Return the logits ``rest(h)`` sampled ``passes`` times, shape ``(passes, B, K)``.

    Passes are evaluated in blocks of rows ``h`` replicated ``c`` times, which is exact
    because dropout masks are drawn independently per row; ``HEAD_BLOCK_ELEMENTS`` bounds
    the replicated block.
    """
    b = h.shape[0]
    width = max(1, h[0].numel())
    block = int(max(1, min(passes, HEAD_BLOCK_ELEMENTS // (b * width))))
    out: list[np.ndarray] = []
    for t0 in range(0, passes, block):
        checkpoint(progress)
        c = min(block, passes - t0)
        hh = h.repeat(c, *([1] * (h.ndim - 1))) if c > 1 else h
        logits = rest(hh).float().reshape(c, b, -1)
        out.append(logits.cpu().numpy())
    return np.concatenate(out)


def _full_passes(model: nn.Module, x: torch.Tensor, passes: int, progress) -> np.ndarray:
    """Run ``passes`` complete forward passes (the naive reference): ``(passes, B, K)``."""
    out: list[np.ndarray] = []
    for _ in range(passes):
        checkpoint(progress)
        out.append(model(x).float().cpu().numpy())
    return np.stack(out)


def mc_dropout_logits(
    model: nn.Module,
    patches: np.ndarray | torch.Tensor,
    *,
    passes: int = 100,
    seed: int = 0,
    batch_size: int = 512,
    cached_trunk: bool = True,
    device=None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Logits of ``passes`` MC-dropout forward passes per cell.

    :func:`mc_dropout_probs` is their softmax; take the logits when a measure needs them
    (the MC spread of the logits separates far out-of-distribution inputs, whose
    saturated probabilities barely vary), and one sampling serves both.

    Only dropout modules are stochastic (BatchNorm etc. stay in eval mode); all module
    modes are restored on return, error or cancellation.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier with ``preprocess``, ``trunk``, ``head``, ``forward`` and at least one
        dropout module (rate 0 is allowed: all passes then agree).
    patches : ndarray or torch.Tensor, shape (N, H, W)
        Normalised patches in [0, 1].
    passes : int
        Number of stochastic passes T (paper: 100).
    seed : int
        Seeds the dropout masks inside a forked RNG (global state untouched). Results are
        reproducible for the same seed, batch size and device.
    batch_size : int
        Cells per batch; memory is bounded by one batch's trunk features plus a block of
        at most ``HEAD_BLOCK_ELEMENTS`` replicated head inputs, never ``(T, N, F)``.
    cached_trunk : bool
        True: trunk once per batch (and, for ``engine.models`` classifiers, the head
        layers before the first dropout), then the rest sampled T times. False: T full
        ``forward`` passes (the naive reference; same distribution, far slower).
    device : str or torch.device, optional
        Where to run; the model is moved there in place. ``None``: the model's device.
    progress : Progress, optional
        Receives ``(cell-passes done, N * T)``; cancellation is checked between blocks.

    Returns
    -------
    ndarray of float32, shape (T, N, K)
        Logits of each pass.

    Raises
    ------
    ValueError
        Bad shapes or arguments, NaN patches, a model without dropout, or (with
        ``cached_trunk``) a trunk that runs dropout.
    hemalens.engine.jobs.Cancelled
        When ``progress`` asks to stop.
    """
    _check_batch_args(batch_size, passes)
    patches, n = _check_patches(patches)
    if not any(isinstance(m, DROPOUT_TYPES) for m in model.modules()):
        raise ValueError("model has no dropout layer: MC dropout would repeat one prediction")
    if cached_trunk and not (hasattr(model, "trunk") and hasattr(model, "head")):
        raise ValueError("cached_trunk needs a model with trunk() and head()")
    dev = _resolve_device(model, device)
    if n == 0:
        return np.zeros((passes, 0, _n_classes(model, patches, dev)), dtype=np.float32)
    blocks: list[np.ndarray] = []  # (T, B, K) per batch
    split = _head_split(model) if cached_trunk else None
    trunk = cast(Callable, getattr(model, "trunk", None))
    rest = split[1] if split is not None else cast(Callable, getattr(model, "head", None))
    total = n * passes
    if progress is not None:
        progress.set_status(f"MC dropout: {passes} passes")
    with (
        _modes(model, dropout_active=True),
        _seeded(int(seed), dev),
        torch.inference_mode(),
    ):
        for start in range(0, n, batch_size):
            checkpoint(progress)
            stop = min(start + batch_size, n)
            x = _prepare(model, _batch(patches, start, stop, dev))
            if cached_trunk:
                with _dropout_watch(model) as fired:
                    h = trunk(x)
                    if split is not None:
                        h = split[0](h)
                if fired:
                    raise ValueError(
                        "the model's trunk runs dropout, so it cannot be cached; "
                        "use cached_trunk=False"
                    )
                blocks.append(_sample_head(rest, h, passes, progress))
            else:
                blocks.append(_full_passes(model, x, passes, progress))
            if progress is not None:
                progress.set_progress(stop * passes, total)
    return np.concatenate(blocks, axis=1)


def mc_summary(probs_tnk) -> dict[str, np.ndarray]:
    """Per-cell summaries of MC-dropout probabilities.

    Parameters
    ----------
    probs_tnk : array_like, shape (T, N, K)
        Probabilities of T passes (:func:`mc_dropout_probs`).

    Returns
    -------
    dict
        ``"mean"`` (N, K); ``"median"`` (N, K), the per-class median over passes
        *renormalised to sum to 1* (per-class medians alone do not); ``"std"`` (N, K),
        the population standard deviation (ddof = 0) over passes. All float64.
    """
    p = np.asarray(probs_tnk, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] == 0:
        raise ValueError(f"MC probabilities must have shape (T>0, N, K), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("MC probabilities contain NaN or infinite values")
    med = np.median(p, axis=0)
    s = med.sum(axis=1, keepdims=True)
    k = p.shape[2]
    # all-zero medians cannot come from a softmax, but never divide by zero
    med = np.divide(med, s, out=np.full_like(med, 1.0 / max(k, 1)), where=s > 0)
    return {"mean": p.mean(axis=0), "median": med, "std": p.std(axis=0)}


def mc_dropout_probs(
    model: nn.Module,
    patches: np.ndarray | torch.Tensor,
    *,
    passes: int = 100,
    seed: int = 0,
    batch_size: int = 512,
    cached_trunk: bool = True,
    device=None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Softmax probabilities of ``passes`` MC-dropout forward passes per cell.

    The softmax of :func:`mc_dropout_logits` with the same arguments (see there).

    Returns
    -------
    ndarray of float32, shape (T, N, K)
        Class probabilities of each pass.
    """
    logits = mc_dropout_logits(
        model, patches, passes=passes, seed=seed, batch_size=batch_size,
        cached_trunk=cached_trunk, device=device, progress=progress,
    )
    return mc_softmax(logits)


def mc_softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


# -- features ------------------------------------------------------------------------------


def model_features(
    model: nn.Module,
    patches: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 512,
    device=None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic features: the penultimate layer and the trunk, in one pass.

    The penultimate features are the input of the last linear layer: for an
    ``engine.models`` classifier ``trunk`` followed by every layer of the head but the
    last (dropout off), e.g. LeNet5's 84 ReLU outputs, AlexNet's 4096. A model whose head
    is not an ``nn.Sequential`` ending in a linear layer gives its trunk features twice.
    These are the inputs of the out-of-distribution detector
    (:mod:`hemalens.engine.review.ood_detector`).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier with ``preprocess`` and ``trunk``.
    patches : ndarray or torch.Tensor, shape (N, H, W)
        Normalised patches in [0, 1].
    batch_size : int
        Cells per forward pass.
    device : str or torch.device, optional
        Where to run; ``None``: the model's device.
    progress : Progress, optional
        Receives ``(cells done, N)``; cancellation is checked between batches.

    Returns
    -------
    (ndarray, ndarray)
        ``(N, D)`` penultimate and ``(N, F)`` trunk features, float32.
    """
    _check_batch_args(batch_size)
    patches, n = _check_patches(patches)
    dev = _resolve_device(model, device)
    seq = getattr(model, "classifier", None)
    prefix: Callable = nn.Identity()
    if isinstance(seq, nn.Sequential) and len(seq) and isinstance(seq[-1], nn.Linear):
        prefix = nn.Sequential(*list(seq)[:-1])
    trunk = cast(Callable, model.trunk)
    pen: list[np.ndarray] = []
    tru: list[np.ndarray] = []
    with _modes(model, dropout_active=False), torch.inference_mode():
        if n == 0:
            x = _prepare(model, torch.zeros((1, *patches.shape[1:]), device=dev))
            t = trunk(x)
            return (np.zeros((0, prefix(t).shape[1]), np.float32),
                    np.zeros((0, t.shape[1]), np.float32))
        for start in range(0, n, batch_size):
            checkpoint(progress)
            stop = min(start + batch_size, n)
            x = _prepare(model, _batch(patches, start, stop, dev))
            t = trunk(x)
            tru.append(t.float().cpu().numpy())
            pen.append(prefix(t).float().cpu().numpy())
            if progress is not None:
                progress.set_progress(stop, n)
    return np.concatenate(pen), np.concatenate(tru)
