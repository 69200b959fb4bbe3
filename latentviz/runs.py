"""A training run from start to checkpoint: the one place the CLI and the app start one.

``RunSpec`` says what to train (validated on construction, with messages that name the
field); ``run_training`` builds the model, trains it through the variant's schedule,
saves a resumable checkpoint atomically after every epoch (after every growth stage for
TreeVAE), evaluates it and writes the final checkpoint. A run that diverges or is stopped
never overwrites a good checkpoint with a bad one; ``resume`` continues a run from its last
saved epoch (stage).
"""
from __future__ import annotations

import logging
import os
import platform
import shlex
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
import torch

from . import checkpoints, distributed, openmp
from .data import DATASETS, Dataset, dataset_for, dataset_label, is_path, load_dataset
from .metrics import CLASSIFIERS, evaluate_model
from .models import ConfigError, build, get_variant
from .models.base import LatentModel
from .train import (Callback, History, Progress, TrainConfig, adam, describe_device, fit,
                    pick_device)

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    variant: str
    dataset: str = "digits"
    model: dict = field(default_factory=dict)      # model config overrides
    train: TrainConfig = field(default_factory=TrainConfig)
    out: Path | None = None                        # checkpoint path; default under runs/
    data_dir: str | None = None
    n_train: int | None = None                     # train on a random slice (demos, tests)
    half: bool = False                             # store float16 weights
    image_size: int | None = None                  # your own images: resize to this square

    def __post_init__(self):
        get_variant(self.variant)                  # raises ConfigError naming the field
        if self.dataset not in DATASETS and not is_path(self.dataset):
            raise ConfigError("dataset", self.dataset, "one of " + ", ".join(DATASETS)
                              + ", or the path of an image folder or .npz file")
        if self.image_size is not None and not is_path(self.dataset):
            raise ConfigError("image_size", self.image_size, "only for your own images "
                              "(a dataset path)")
        if self.image_size is not None and not (
                isinstance(self.image_size, int) and 4 <= self.image_size <= 512):
            raise ConfigError("image_size", self.image_size, "a whole number from 4 to 512")
        if self.n_train is not None and self.n_train < 2:
            raise ConfigError("n_train", self.n_train, ">= 2")
        if self.out is None:
            self.out = (Path("runs") / f"{dataset_label(self.dataset)}-{self.variant}-seed"
                        f"{self.train.seed}.safetensors")
        self.out = Path(self.out)
        if self.out.suffix != ".safetensors":
            raise ConfigError("out", str(self.out), "a path ending in .safetensors")
        check_out(self.out)

    def model_config(self, data: Dataset):
        """The full, validated model config for this dataset. On your own images the
        backbone defaults to auto: conv where the size allows, else mlp."""
        own = {"backbone": "auto"} if data.source is not None else {}
        return get_variant(self.variant).config(image_shape=data.image_shape,
                                                n_classes=data.n_classes,
                                                **{**own, **self.model})


@dataclass
class RunResult:
    model: LatentModel
    history: History
    metrics: dict
    path: Path
    seconds: float


def load_data(spec: RunSpec, device, meta: dict | None = None) -> Dataset:
    """The run's data; with a checkpoint's ``meta``, the dataset it was trained on
    (your own images checked to be unchanged)."""
    if meta is not None and meta.get("dataset_source"):
        data = dataset_for(meta, device=device)
    else:
        data = load_dataset(spec.dataset, spec.data_dir, device=device, image_size=spec.image_size)
    if spec.n_train:
        data = data.subset(n_train=spec.n_train, seed=spec.train.seed)
    return data


def _made(spec: RunSpec, device, seconds: float, argv: list[str] | None,
          before: dict | None = None) -> dict:
    """How the run was made. A resumed run (``before``: the partial checkpoint's record)
    keeps the first command, adds up the seconds and lists the epochs it resumed after."""
    made = {"command": " ".join(shlex.quote(a) for a in argv) if argv else None,
            "device": describe_device(device), "seconds": round(seconds, 2),
            "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "n_train": spec.n_train,
            "world_size": distributed.world_size(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if before:
        made["command"] = before.get("command") or made["command"]
        earlier = before.get("seconds")
        earlier = float(earlier) if isinstance(earlier, (int, float)) else 0.0
        resumes = before.get("resumed_after_epochs")
        resumes = [e for e in resumes if isinstance(e, int)] if isinstance(resumes, list) else []
        made["seconds"] = round(seconds + earlier, 2)
        made["resumed_after_epochs"] = resumes + [int(before.get("_epochs", 0))]
    return made


def run_training(spec: RunSpec, callback: Callback | None = None, *,
                 classifiers=CLASSIFIERS, argv: list[str] | None = None,
                 data: Dataset | None = None) -> RunResult:
    """Train ``spec`` to its checkpoint; see the module docstring for the guarantees.

    Under torchrun every process calls this (it joins the process group); rank 0 writes
    the checkpoints and evaluates, the other ranks return no metrics.
    """
    distributed.init_from_env(spec.train.device)
    device = pick_device(spec.train.device)
    data = data if data is not None else load_data(spec, device)
    torch.manual_seed(spec.train.seed)
    model = build(spec.variant, **spec.model_config(data).to_dict())
    return _train_and_save(spec, model, data, device, callback, classifiers, argv)


def resume(path: str | os.PathLike, extra_epochs: int | None = None,
           callback: Callback | None = None, *, classifiers=CLASSIFIERS,
           data_dir: str | None = None, argv: list[str] | None = None,
           max_leaves: int | None = None, out: str | os.PathLike | None = None) -> RunResult:
    """Continue a run from the checkpoint its last completed epoch left.

    With the same seed on the CPU the result equals the uninterrupted run: each epoch's
    shuffle and noise depend on (seed, epoch) alone and Adam's state is restored.

    ``max_leaves`` (TreeVAE, before its growth has ended) lets the tree grow to more
    leaves: resumed from the checkpoint a run keeps where its growth ended
    (:func:`grown_path`), it grows on exactly as a run started with that many leaves.
    ``out`` is where the finished checkpoint goes (default: the partial file's own
    final path); a larger tree is a new run, so ``max_leaves`` needs one.
    """
    model, ckpt = checkpoints.load(path)
    meta = ckpt.meta
    scheduled = getattr(model, "fit_schedule", None) is not None
    _check_resumable(meta, path, extra_epochs, scheduled)
    if max_leaves is not None:
        _grow_further(model, path, max_leaves, out)
    tc = TrainConfig.from_dict(meta["train_config"])
    done = meta["epochs"]
    if scheduled:  # TreeVAE: the growth schedule goes on from its last finished stage
        if extra_epochs is not None:
            raise ConfigError("epochs", extra_epochs, "not given: a TreeVAE run resumes its "
                              "growth schedule, which sets every stage's epochs")
        if not getattr(model, "schedule_state", None):
            raise checkpoints.CheckpointError(
                f"{path}: a finished TreeVAE (its growth schedule is complete); nothing to "
                "resume. Train a new one to grow a different tree.")
    else:
        target = tc.epochs if extra_epochs is None else done + extra_epochs
        if target <= done:
            raise ConfigError("epochs", target, f"> {done}, the epochs already done")
        tc.replace(epochs=target - done)  # the trainer's bound on one run's epochs
    spec = _resume_spec(meta, path, data_dir)
    if out is not None:
        spec.out = Path(out)
        check_out(spec.out)
    distributed.init_from_env(tc.device)
    device = pick_device(tc.device)
    data = load_data(spec, device, meta)
    model.to(device)
    history = History.from_dict(meta.get("history") or {})
    before = {**(meta.get("made") or {}), "_epochs": done}
    if scheduled:
        return _train_and_save(spec, model, data, device, callback, classifiers, argv,
                               before=before, history=history,
                               restore=lambda opt: checkpoints.restore_optimizer(opt, ckpt))
    opt = adam(model.parameters(), tc)
    checkpoints.restore_optimizer(opt, ckpt)
    return _train_and_save(spec, model, data, device, callback, classifiers, argv, before=before,
                           optimizer=opt, start_epoch=done, epochs=target - done,
                           history=history)


def _grow_further(model, path, max_leaves, out) -> None:
    """Raise the tree's ``max_leaves`` for a resumed run (see :func:`resume`)."""
    state = getattr(model, "schedule_state", None)
    if getattr(model, "fit_schedule", None) is None:
        raise ConfigError("max_leaves", max_leaves, "not given: only TreeVAE grows")
    if out is None:
        raise ConfigError("out", None, "a path for the larger tree (a new run; the file "
                          "resumed stays as it is)")
    if not state or state.get("next") == "final":
        raise ConfigError("max_leaves", max_leaves, f"not given: {path} has finished growing "
                          "(and was pruned); resume the checkpoint its run saved when growth "
                          "ended, NAME.grown.partial.safetensors")
    if isinstance(max_leaves, bool) or not isinstance(max_leaves, int) \
            or max_leaves < model.config.max_leaves:
        raise ConfigError("max_leaves", max_leaves, f"a whole number >= "
                          f"{model.config.max_leaves}, the leaves this run grows to")
    model.config = model.config.replace(max_leaves=max_leaves)


def _check_resumable(meta: dict, path, extra_epochs, scheduled: bool) -> None:
    """What resume needs beyond a loadable checkpoint (the header's types are checked by
    checkpoints.read_header): how it was trained, its history, Adam's state for an
    interrupted run, and a whole, positive number of epochs to add."""
    if extra_epochs is not None and (isinstance(extra_epochs, bool) or not isinstance(
            extra_epochs, int) or extra_epochs < 1):
        raise ConfigError("epochs", extra_epochs, "a whole number >= 1: the epochs to add")
    if meta.get("train_config") is None:
        raise checkpoints.CheckpointError(f"{path}: its metadata has no train_config (how it "
                                          "was trained), so it cannot be resumed")
    if meta.get("history") is None:
        raise checkpoints.CheckpointError(f"{path}: its metadata has no history (the epochs "
                                          "done), so it cannot be resumed")
    if (not scheduled and meta.get("optimizer") is None
            and str(path).endswith(".partial.safetensors")):
        raise checkpoints.CheckpointError(f"{path}: an interrupted run without its optimizer "
                                          "state; resuming would not continue it as it was")


def check_out(out: Path) -> None:
    """ConfigError naming ``out`` unless a checkpoint can be written there: not a
    directory, not under a regular file, in a folder we may write, and never over a file
    that is not a latentviz checkpoint (nor its ``.partial`` side file)."""
    for p in (out, partial_path(out)):
        try:
            mode = os.stat(p).st_mode
        except (FileNotFoundError, NotADirectoryError):  # the folder check below says which
            continue
        except OSError as exc:
            raise ConfigError("out", str(p), f"a path that can be written ({exc.strerror})") from None
        if stat.S_ISDIR(mode):
            raise ConfigError("out", str(p), "a file's path; this is a directory")
        try:
            checkpoints.read_header(p, str(p))
        except checkpoints.CheckpointError as exc:
            raise ConfigError("out", str(p), "a new path or a latentviz checkpoint to replace; "
                              f"this file is not one and is not overwritten ({exc})") from None
    folder = out.parent
    while not os.path.lexists(folder):
        folder = folder.parent
    if not os.path.isdir(folder):
        raise ConfigError("out", str(out), f"a path in a folder; {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("out", str(out), f"a path in a folder you can write; {folder} is not")


def _train_and_save(spec, model, data, device, callback, classifiers, argv, *, before=None,
                    optimizer=None, start_epoch=0, epochs=None, history=None,
                    restore=None) -> RunResult:
    t0 = time.perf_counter()
    tc = spec.train
    history = history if history is not None else History()
    # Every finished epoch goes to a side file, so a killed run can resume and a finished
    # checkpoint at spec.out is never overwritten by an unfinished or diverged one.
    # TreeVAE's growth schedule saves after every epoch too, with its stage's Adam.
    partial = partial_path(spec.out)
    dataset = spec.dataset if data.source is None else data.name  # a path: the absolute one
    distributed.refuse_schedule(model)
    schedule = getattr(model, "fit_schedule", None)
    if schedule is None:
        optimizer = optimizer or adam(model.parameters(), tc)

    def save_partial():
        checkpoints.save(partial, model, dataset=dataset, train_config=tc,
                         history=history, dataset_source=data.source,
                         optimizer=optimizer or getattr(model, "_stage_opt", None),
                         made=_made(spec, device, time.perf_counter() - t0, argv, before))

    def on_progress(p: Progress):
        if p.phase == "epoch" and schedule is None:
            save_partial()
        return callback(p) if callback else None

    def save_grown():  # the partial file just saved, kept: a larger tree grows on from it
        if distributed.is_main():
            checkpoints.atomic_write(grown_path(spec.out), partial.read_bytes())

    with openmp.flushing():  # TreeVAE's work between its stages too (fit's own is)
        if schedule is None:
            fit(model, data, tc.replace(epochs=epochs or tc.epochs), on_progress,
                optimizer=optimizer, start_epoch=start_epoch, history=history)
        else:
            schedule(data, tc, on_progress, on_stage=save_partial, history=history,
                     restore_optimizer=restore, on_grown=save_grown)
    if not distributed.is_main():  # the weights are rank 0's; it evaluates and writes
        return RunResult(model, history, {}, Path(spec.out), time.perf_counter() - t0)
    metrics = evaluate_model(model, data, classifiers=classifiers, random_state=tc.seed)
    made = _made(spec, device, time.perf_counter() - t0, argv, before)
    seconds = made["seconds"]
    path = checkpoints.save(spec.out, model, dataset=dataset, train_config=tc,
                            history=history, metrics=metrics, dataset_source=data.source,
                            made=made, half=spec.half)
    partial.unlink(missing_ok=True)
    return RunResult(model, history, metrics, path, seconds)


def resume_spec(path: str | os.PathLike, data_dir: str | None = None) -> RunSpec:
    """What :func:`resume` of ``path`` continues (variant, dataset, training settings,
    training slice) and where it saves: for a page to show before it starts."""
    return _resume_spec(checkpoints.read_meta(path).meta, path, data_dir)


def _resume_spec(meta: dict, path, data_dir) -> RunSpec:
    try:
        return RunSpec(meta["variant"], meta["dataset"], {},
                       TrainConfig.from_dict(meta.get("train_config") or {}), final_path(path),
                       data_dir,
                       (meta.get("made") or {}).get("n_train"),
                       image_size=(meta.get("dataset_source") or {}).get("image_size"))
    except (KeyError, TypeError) as exc:
        raise checkpoints.CheckpointError(f"{path}: its metadata does not say how to go on "
                                          f"({exc})") from None


def partial_path(out: Path) -> Path:
    """Where a run keeps its last finished epoch until it completes."""
    out = Path(out)
    return out.with_name(out.stem + ".partial.safetensors")


def grown_path(out: Path) -> Path:
    """Where a TreeVAE run keeps its checkpoint of the moment growth ended, before pruning
    and the final fine-tune; ``resume(..., max_leaves=N, out=...)`` grows on from it."""
    out = Path(out)
    return out.with_name(out.stem + ".grown.partial.safetensors")


def final_path(partial: str | os.PathLike) -> Path:
    """The checkpoint a partial file becomes when its run completes (inverse of
    :func:`partial_path`; any other path is its own final path)."""
    p = Path(partial)
    if p.name.endswith(".partial.safetensors"):
        return p.with_name(p.name[: -len(".partial.safetensors")] + ".safetensors")
    return p
