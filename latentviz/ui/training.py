"""Training from the app without freezing it: one background thread per browser session.

A :class:`TrainingJob` runs :func:`latentviz.runs.run_training` in a daemon thread and
collects what the trainer's callback reports (running and per-epoch loss terms, the
fraction done, the stage) under a lock; the Train page polls it from an
``st.fragment(run_every=...)``, so the session's script thread and every other session
stay free. The job lives in that session's state; a process-wide count bounds how many
run at once (``$LATENTVIZ_MAX_JOBS``, default 2). When the run ends the model is dropped
(only the checkpoint path, metrics and curves are kept) and memory is released.
"""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from ..models import ConfigError
from ..runs import RunSpec, resume, resume_spec, run_training
from ..train import Progress, TrainingDiverged

log = logging.getLogger(__name__)

_ACTIVE: dict[int, str] = {}  # id(job) -> the checkpoint path it writes
_ACTIVE_LOCK = threading.Lock()


def _key(path) -> str:
    return os.path.abspath(os.fspath(path))


def active_outputs() -> set[str]:
    """Absolute paths of the checkpoints the running jobs of this app write (their
    ``.partial.safetensors`` beside them is in use, not interrupted)."""
    with _ACTIVE_LOCK:
        return set(_ACTIVE.values())


def max_jobs() -> int:
    try:
        return max(1, int(os.environ.get("LATENTVIZ_MAX_JOBS", "2")))
    except ValueError:
        return 2


class Busy(RuntimeError):
    """Too many training runs at once in this app process."""


@dataclass
class Snapshot:
    """A consistent copy of a job's state for one page render."""

    status: str                      # "running", "done", "stopped", "failed"
    fraction: float
    message: str
    train: list                      # [(epoch, {term: value})]
    test: list
    error: str | None
    result: dict | None
    seconds: float


@dataclass
class TrainingJob:
    spec: RunSpec
    classifiers: tuple = ("logreg", "nn", "knn", "forest")
    resume_from: str | None = None   # a *.partial.safetensors this job continues
    status: str = "pending"
    fraction: float = 0.0
    message: str = "starting"
    train: list = field(default_factory=list)
    test: list = field(default_factory=list)
    error: str | None = None
    result: dict | None = None
    started: float = 0.0
    finished: float | None = None
    epochs_done: int = 0             # finished epochs (all stages): the curves' x axis
    _handed_over: bool = field(default=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def resuming(cls, partial: str | os.PathLike) -> "TrainingJob":
        """A job that continues an interrupted run from its partial checkpoint."""
        from ..checkpoints import read_meta
        from ..train import History

        job = cls(resume_spec(partial), resume_from=str(partial))
        done = History.from_dict(read_meta(partial).meta.get("history") or {})
        job.train = [(i + 1, dict(t)) for i, t in enumerate(done.train)]  # curves go on
        job.test = [(i + 1, dict(t)) for i, t in enumerate(done.test)]
        job.epochs_done = done.epochs
        return job

    # -- control (called from the page)
    def start(self) -> "TrainingJob":
        with _ACTIVE_LOCK:
            if self.output in _ACTIVE.values():
                raise Busy(f"another run in this app is writing {self.spec.out}; choose "
                           "another checkpoint name or wait for it to finish")
            if len(_ACTIVE) >= max_jobs():
                raise Busy(f"{len(_ACTIVE)} training runs are already going in this app "
                           f"(the limit is {max_jobs()}); try again when one finishes")
            _ACTIVE[id(self)] = self.output
        self.status, self.started = "running", time.time()
        self._thread = threading.Thread(target=self._run, name=f"latentviz-train-{id(self)}",
                                        daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Stop after the current epoch; the checkpoint of the epochs done is still saved."""
        self._stop.set()
        with self._lock:
            self.message = "stopping after this epoch"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def output(self) -> str:
        """The absolute path of the checkpoint this job writes (see active_outputs)."""
        return _key(self.spec.out)

    @property
    def running(self) -> bool:
        return self.status in ("pending", "running")

    def snapshot(self) -> Snapshot:
        with self._lock:
            end = self.finished or time.time()
            return Snapshot(self.status, self.fraction, self.message, list(self.train),
                            list(self.test), self.error, self.result,
                            end - self.started if self.started else 0.0)

    def new_checkpoint(self) -> str | None:
        """The saved checkpoint's path, once: the first call after the run has ended."""
        with self._lock:
            if self._handed_over or self.result is None:
                return None
            self._handed_over = True
            return self.result["path"]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (tests, the CLI); True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # -- the thread
    def _on_progress(self, p: Progress):
        # x counts epochs over the whole run: TreeVAE's stages each restart p.epoch at 1.
        with self._lock:
            x = self.epochs_done + (1.0 if p.phase == "epoch" else p.step / max(p.steps, 1))
            if p.phase == "epoch":
                self.epochs_done += 1
            self.fraction = p.fraction
            stage = f"{p.stage}: " if p.stage else ""
            self.message = f"{stage}epoch {p.epoch} of {p.epochs}, step {p.step} of {p.steps}"
            if self._stop.is_set():
                self.message += " (stopping after this epoch)"
            self.train.append((x, dict(p.terms)))
            if p.phase == "epoch" and p.test_terms:
                self.test.append((x, dict(p.test_terms)))
        return False if self._stop.is_set() else None

    def _run(self) -> None:
        try:
            if self.resume_from:
                res = resume(self.resume_from, None, self._on_progress,
                             classifiers=self.classifiers)
            else:
                res = run_training(self.spec, self._on_progress, classifiers=self.classifiers)
            summary = {"path": str(res.path), "metrics": dict(res.metrics),
                       "variant": self.spec.variant, "dataset": self.spec.dataset,
                       "seconds": res.seconds, "epochs": res.history.epochs,
                       "stopped": res.history.stopped}
            del res  # the model: the checkpoint on disk is what the app uses from now on
            with self._lock:
                self.result = summary
                self.status = "stopped" if summary["stopped"] else "done"
                self.fraction = 1.0
                self.message = summary["stopped"] or "finished"
        except (TrainingDiverged, ConfigError, ValueError, RuntimeError, OSError) as exc:
            log.warning("training run failed: %s", exc)
            with self._lock:
                self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a thread must report, never die silently
            log.exception("training run crashed")
            with self._lock:
                self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self.finished = time.time()
            with _ACTIVE_LOCK:
                _ACTIVE.pop(id(self), None)
            _release_memory()


def describe_interrupted(partial) -> str:
    """One line for the Train page: what an interrupted run is and how far it got
    (TreeVAE: also its growth stages); CheckpointError if it cannot be resumed."""
    from ..checkpoints import CheckpointError, read_meta

    meta = read_meta(partial).meta
    try:
        done = f"{int(meta.get('epochs') or 0)} epochs done"
        if (schedule := (meta.get("extra") or {}).get("schedule")):
            stage = schedule.get("stage")  # a stage cut off after some of its epochs
            done += f", {int(schedule['stages']) - bool(stage)} growth stages"
            if stage:
                done += f" and {int(stage['epoch'])} of {int(stage['epochs'])} epochs of {stage['name']}"
        return f"**{meta['variant']}** on **{meta['dataset']}**, {done}"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{partial}: its metadata does not say how far it got "
                              f"({type(exc).__name__}: {exc})") from None


def _release_memory() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def quick_spec() -> RunSpec:
    """The Home page's one-click model: a lambda-hot VAE on the bundled 8x8 digits."""
    from ..train import TrainConfig
    from .state import runs_dir

    return RunSpec("lambda_hot", "digits", train=TrainConfig(epochs=15, seed=0),
                   out=runs_dir() / "digits-lambda_hot-quick.safetensors")


def train_quick(progress) -> "os.PathLike":
    """Train :func:`quick_spec` in the calling thread (seconds on a CPU), reporting
    ``progress(fraction, message)``; returns the checkpoint's path."""
    def on_progress(p: Progress):
        progress(min(p.fraction, 1.0), f"epoch {p.epoch} of {p.epochs}")

    res = run_training(quick_spec(), on_progress, classifiers=("logreg", "knn"))
    path = res.path
    del res
    _release_memory()
    return path
