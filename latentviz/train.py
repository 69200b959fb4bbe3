"""One trainer for every variant.

``fit(model, data, config, callback)`` runs shuffled index batches over tensors that
stay on the training device (no DataLoader, no per-sample Python), Adam, optional bf16
autocast, and a seed that makes a CPU run reproducible. It calls ``model.prepare(data)``
once and ``model.on_epoch_end(data)`` after every epoch, so variants that refit something
(k-means centres, TreeVAE growth) need no code here.

Loss terms are accumulated on the device and read back once per ``log_every`` steps and
once per epoch, so the GPU never waits on the host inside an epoch. A non-finite term
stops training with :class:`TrainingDiverged` naming the epoch and the term; the weights
are rolled back to the last good epoch.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import distributed, openmp
from .data import Dataset
from .models.base import Config, LatentModel, param

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(Config):
    epochs: int = param(10, "passes over the training set", min=1, max=10000)
    batch_size: int = param(128, "images per optimiser step", min=1, max=65536)
    lr: float = param(1e-3, "Adam learning rate", min=0.0, max=10.0, min_exclusive=True)
    weight_decay: float = param(0.0, "Adam weight decay (L2)", min=0.0, max=1.0)
    seed: int = param(0, "random seed: same seed, same CPU run", min=0, max=2 ** 32 - 1)
    amp: bool = param(False, "bf16 autocast on CUDA (ignored on CPU)")
    device: str = param("auto", "where to train", choices=("auto", "cpu", "cuda", "mps"))
    eval_batch_size: int = param(4096, "images per batch when evaluating", min=1)
    log_every: int = param(50, "steps between progress reports (each costs one host sync)",
                           min=1)
    divergence_factor: float = param(10.0, "stop when an epoch's loss exceeds this many times "
                                     "the loss before training", min=1.0, min_exclusive=True)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA if present, else MPS, else CPU (or the one asked for)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    from .models.base import ConfigError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError("device", name, "auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu or auto: no CUDA GPU is available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError("device", name, f"a GPU index below {torch.cuda.device_count()}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ConfigError("device", name, "cpu or auto: no Apple MPS device is available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError("device", name, "auto, cpu, cuda, cuda:N or mps")
    return device


def adam(params, config: TrainConfig) -> torch.optim.Adam:
    """Adam with the config's learning rate and weight decay (coupled L2, as the papers'
    code), as PyTorch's fused kernel where this torch has one for the parameters' device
    (CPU and CUDA since torch 2.4): one kernel for all parameters instead of a dozen small
    ops per tensor, the same update up to float rounding."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                fused=True)
    except (RuntimeError, TypeError, ValueError):   # no fused kernel for this device
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@dataclass
class Progress:
    """What the callback receives: where training is, and the latest running terms."""

    epoch: int          # 1-based
    epochs: int
    step: int           # steps done in this epoch
    steps: int          # steps per epoch
    terms: dict[str, float]
    phase: str = "train"            # "train" (running means) or "epoch" (train+test means)
    test_terms: dict[str, float] | None = None
    stage: str = ""                 # e.g. TreeVAE's growth stage
    overall: float | None = None    # a multi-stage schedule's own estimate of the whole run

    @property
    def fraction(self) -> float:
        """How much of the run is done, in [0, 1]: of the whole schedule where it says."""
        if self.overall is not None:
            return self.overall
        return ((self.epoch - 1) + self.step / max(self.steps, 1)) / max(self.epochs, 1)


@dataclass
class History:
    """Per-epoch means of every named term, train and test, and the wall time."""

    train: list[dict[str, float]] = field(default_factory=list)
    test: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    stopped: str | None = None  # why training ended early, if it did

    def to_dict(self) -> dict:
        return {"train": self.train, "test": self.test, "seconds": self.seconds,
                "stages": self.stages, "stopped": self.stopped}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(list(d.get("train", [])), list(d.get("test", [])), list(d.get("seconds", [])),
                   list(d.get("stages", [])), d.get("stopped"))

    def extend(self, other: "History") -> None:
        self.train += other.train
        self.test += other.test
        self.seconds += other.seconds
        self.stages += other.stages
        self.stopped = other.stopped or self.stopped

    @property
    def epochs(self) -> int:
        return len(self.train)


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the model holds the last good weights."""

    def __init__(self, epoch: int, term: str, value: float, history: History,
                 weight: tuple[str, float] | None = None, overflow: bool = False):
        self.epoch, self.term, self.value, self.history = epoch, term, value, history
        self.weight = weight  # (setting, value) that weighs the term, where it is the cause
        if weight is not None and overflow:
            what = (f"{weight[0]} * {term} overflowed float32 ({weight[0]} = {weight[1]:g}, "
                    f"{term} = {value:.4g} was finite); lower {weight[0]}")
        elif weight is not None:
            what = (f"{weight[0]} * {term} grew to {weight[1] * value:.4g}, more than "
                    f"divergence_factor times the loss before training ({weight[0]} = "
                    f"{weight[1]:g}); lower {weight[0]} or the learning rate")
        else:
            what = f"loss term '{term}' became {value:.4g} (try a smaller learning rate)"
        super().__init__(f"training diverged in epoch {epoch}: {what}; the weights from "
                         f"before epoch {epoch} were kept")


Callback = Callable[[Progress], "bool | None"]  # return False to stop after this report


def _first_bad(terms: dict[str, float], limit: float = math.inf,
               weights: dict[str, tuple[str, float]] | None = None) -> str | None:
    """The term that makes this epoch diverged: a non-finite one, else (if the weighted
    total passed ``limit``) the one weighing most in it."""
    for name, value in terms.items():
        if not math.isfinite(value):
            return name
    w = {k: (weights or {}).get(k, ("", 1.0))[1] for k in terms if k != "total"}
    if sum(w[k] * terms[k] for k in w) > limit:
        return max(w, key=lambda k: w[k] * terms[k])
    return None


def _overflowed(terms: dict[str, float], weights: dict[str, tuple[str, float]]) -> str | None:
    """A term that is finite while its weighted value overflows float32 (beta * kl)."""
    for k, (_, w) in weights.items():
        v = terms.get(k)
        if v is not None and math.isfinite(v) and not math.isfinite(float(
                torch.tensor(v, dtype=torch.float32) * w)):
            return k
    return None


def _weighting(term: str, weights: dict[str, tuple[str, float]]) -> tuple[str, float] | None:
    """The setting that weighs ``term`` in the total, where it is not 1."""
    setting = weights.get(term)
    return setting if setting is not None and setting[1] != 1 else None


@torch.no_grad()
def evaluate(model: LatentModel, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
             seed: int = 0) -> dict[str, float]:
    """Means of the named loss terms over (x, y) in eval mode, with a seeded z sample."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            out = model.loss(xb, yb)
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * (len(xb) / len(x))
            # Weighted by the batch's share, not its size: a total near the float32 limit
            # (beta * kl) must not overflow in the sum when it does not in the model.
            sums["total"] = sums.get("total", 0.0) + out.total.detach().float() * (len(xb) / len(x))
    model.train(was_training)
    return {k: float(v) for k, v in sums.items()}


def fit(model: LatentModel, data: Dataset, config: TrainConfig = TrainConfig(),
        callback: Callback | None = None, *, optimizer: torch.optim.Optimizer | None = None,
        params=None, stage: str = "", prepare: bool = True, x_train=None, y_train=None,
        start_epoch: int = 0, history: History | None = None, x_test=None, y_test=None,
        eval_every: int = 1) -> History:
    """Train ``model`` on ``data`` and return its :class:`History`.

    Parameters
    ----------
    callback : called with a :class:`Progress` every ``log_every`` steps and at every
        epoch end; returning False stops training after the current epoch. Under torchrun
        it runs on rank 0 only, with the terms averaged over the ranks.
    optimizer, params : an optimiser to continue with, or the parameters to train (all by
        default); TreeVAE trains subtrees this way.
    x_train, y_train : train on these rows instead of ``data.x_train`` (subtree training).
    x_test, y_test : evaluate on these rows instead of ``data.x_test`` (none: no test terms).
    eval_every : evaluate the test rows after the epochs numbered a multiple of this and
        after the last one; the other epochs' test terms are ``{}``.
    start_epoch : epochs already done (resuming with the optimiser's saved state).
    history : append the epochs to this History (it is also returned); by the time the
        callback hears of an epoch, the epoch is in it.
    """
    # Subnormal floats flushed to zero on this thread while it trains; the OpenMP workers
    # have flushed since latentviz's import (openmp.flush_subnormals).
    with openmp.flushing():
        return _fit(model, data, config, callback, optimizer=optimizer, params=params,
                    stage=stage, prepare=prepare, x_train=x_train, y_train=y_train,
                    start_epoch=start_epoch, history=history, x_test=x_test, y_test=y_test,
                    eval_every=eval_every)


def _fit(model, data, config, callback, *, optimizer, params, stage, prepare, x_train,
         y_train, start_epoch, history, x_test, y_test, eval_every) -> History:
    device = pick_device(config.device)
    model.to(device)
    data = data.to(device)
    x = data.x_train if x_train is None else x_train.to(device)
    y = data.y_train if y_train is None else y_train.to(device)
    xt = data.x_test if x_test is None else x_test.to(device)
    yt = data.y_test if y_test is None else y_test.to(device)
    n = len(x)
    if n == 0:
        raise ValueError("no training samples")
    torch.manual_seed(config.seed)
    if prepare and start_epoch == 0:
        model.prepare(data)
    if optimizer is None:
        optimizer = adam(params if params is not None else model.parameters(), config)
    use_amp = config.amp and device.type == "cuda"
    bs = min(config.batch_size, n)
    steps = n // bs if n >= bs else 1  # drop the ragged last batch: one shape, no recompiles
    # Under torchrun each step's global batch is split evenly between the processes and DDP
    # averages their gradients (distributed.py); one process: model.loss, bs and rank 0.
    world, rank = distributed.world_size(), distributed.rank()
    distributed.check_batch(bs)
    loss_fn, lbs = distributed.step_loss(model, device), bs // world
    history = History() if history is None else history
    # A run diverges when its loss leaves the finite numbers or, since the clamped
    # log-variance keeps a blown-up VAE finite, when it grows far past where it started.
    start_loss = evaluate(model, x[:2048], y[:2048], config.eval_batch_size, config.seed)["total"]
    limit = config.divergence_factor * max(abs(start_loss), 1.0)
    model.train()
    for epoch in range(start_epoch + 1, start_epoch + config.epochs + 1):
        t0 = time.perf_counter()
        good = copy.deepcopy(model.state_dict())
        # Each epoch's shuffle and noise depend on (seed, epoch) alone, so a run resumed
        # from a checkpoint of epoch k continues exactly as the uninterrupted run.
        # Under torchrun every rank shuffles alike and draws its own noise (offset by
        # rank * 2^20: past any epoch, inside the 32 bits the CPU generator keeps).
        torch.manual_seed(_epoch_seed(config.seed, epoch) + (rank << 20))
        gen = torch.Generator(device="cpu").manual_seed(_epoch_seed(config.seed, epoch))
        perm = distributed.my_share(torch.randperm(n, generator=gen), bs, steps).to(device)
        sums: dict[str, torch.Tensor] = {}
        # Step at which each term first went non-finite, kept on the device (no sync): once
        # one term is NaN the weights are, and every term follows; the first one is the cause.
        first_bad: dict[str, torch.Tensor] = {}
        # Step at which a weighted term (beta * kl) first overflowed float32 while the term
        # itself was finite, and the term's value then: that overflow, not the term, is the
        # cause. Tracked only for weights above 1 (no others can overflow a finite value).
        overflow: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        weights: dict[str, tuple[str, float]] = {}
        stop = False
        for step in range(steps):
            idx = perm[step * lbs:(step + 1) * lbs]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = loss_fn(x[idx], y[idx])
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            for k, v in out.terms.items():
                v = v.detach().float()
                sums[k] = sums.get(k, 0.0) + v
                if k not in first_bad:
                    first_bad[k] = torch.full((), float(steps), device=device)
                fb = first_bad[k]
                first_bad[k] = torch.where(torch.isfinite(v) | (fb < step), fb, float(step))
            weights = out.weights
            for k, (_, w) in weights.items():
                if abs(w) > 1 and k in out.terms:
                    v = out.terms[k].detach().float()
                    at, val = overflow.get(k) or (torch.full((), float(steps), device=device),
                                                  torch.zeros((), device=device))
                    new = torch.isfinite(v) & ~torch.isfinite(v * w) & (at == steps)
                    overflow[k] = (torch.where(new, float(step), at), torch.where(new, v, val))
            if (callback or world > 1) and (step + 1) % config.log_every == 0 and step + 1 < steps:
                running = {k: float(v) / (step + 1) for k, v in distributed.mean(sums).items()}
                bad = _first_bad(running)
                if bad:
                    _diverged_first(model, good, epoch, running, first_bad, overflow, weights,
                                    history, steps)
                if callback and rank == 0 and callback(Progress(
                        epoch, start_epoch + config.epochs, step + 1, steps, running,
                        stage=stage)) is False:
                    stop = True
        train_terms = {k: float(v) / steps for k, v in distributed.mean(sums).items()}
        bad = _first_bad(train_terms, limit, weights)
        if (bad and not math.isfinite(train_terms[bad])) or any(
                float(at) < steps for at, _ in overflow.values()):
            _diverged_first(model, good, epoch, train_terms, first_bad, overflow, weights,
                            history, steps)
        if bad:
            _diverged(model, good, epoch, bad, train_terms[bad], history,
                      _weighting(bad, weights))
        model.eval()
        model.on_epoch_end(data)
        model.train()
        test_terms = {}
        if len(xt) and (epoch % eval_every == 0 or epoch == start_epoch + config.epochs):
            test_terms = evaluate(model, xt, yt, config.eval_batch_size, config.seed)
        bad = _first_bad(test_terms, limit, weights)
        if bad and (over := _overflowed(test_terms, weights)):
            _diverged(model, good, epoch, over, test_terms[over], history, weights[over], True)
        if bad:
            _diverged(model, good, epoch, bad, test_terms[bad], history,
                      _weighting(bad, weights))
        history.train.append(train_terms)
        history.test.append(test_terms)
        history.seconds.append(time.perf_counter() - t0)
        history.stages.append(stage)
        log.info("epoch %d %s train %s test %s", epoch, stage, train_terms, test_terms)
        if callback and rank == 0 and callback(Progress(
                epoch, start_epoch + config.epochs, steps, steps, train_terms, "epoch",
                test_terms, stage)) is False:
            stop = True
        if distributed.any_rank(stop, device):
            history.stopped = f"stopped by the user after epoch {epoch}"
            break
    model.eval()
    return history


def train_model(model: LatentModel, data: Dataset, config: TrainConfig = TrainConfig(),
                callback: Callback | None = None) -> History:
    """Train any variant: through its own schedule if it has one (``fit_schedule``, e.g.
    TreeVAE's growth, which calls :func:`fit` in stages), else :func:`fit`."""
    distributed.refuse_schedule(model)
    schedule = getattr(model, "fit_schedule", None)
    if schedule is not None:
        return schedule(data, config, callback)
    return fit(model, data, config, callback)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2 ** 63)


def _diverged(model, good_state, epoch, term, value, history, weight=None, overflow=False):
    model.load_state_dict(good_state)
    model.eval()
    history.stopped = f"diverged in epoch {epoch} ({term} = {value})"
    raise TrainingDiverged(epoch, term, value, history, weight, overflow)


def _diverged_first(model, good_state, epoch, terms, first_bad, overflow, weights, history,
                    n_steps):
    """Non-finite terms: name the first thing that went wrong, a weighted term's overflow
    (its weight is the setting to change) or the first term to go NaN or infinite."""
    steps = {k: float(v) for k, v in first_bad.items()}
    bad = min(steps, key=steps.get) if steps else next(iter(terms))
    over = {k: (float(at), float(v)) for k, (at, v) in overflow.items()}
    if over:
        k = min(over, key=lambda k: over[k][0])
        if over[k][0] < n_steps and over[k][0] <= steps.get(bad, math.inf):
            _diverged(model, good_state, epoch, k, over[k][1], history, weights.get(k), True)
    _diverged(model, good_state, epoch, bad, terms.get(bad, math.nan), history)
