"""The lambda sweep and the seed runs (sections 5 and 6): trained by ``--retrain``, their
metrics and commands kept in ``<out>/results/extra_runs.json``, read back for the tables."""
from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .papers import TITLES, TREE_DP_LEAVES
from .settings import DEFAULT_RUNS_DIR, EXTRA_RUNS_FILE, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtraRun:
    """One run of the lambda sweep or the seed spread: not shipped, only its metrics are."""

    variant: str
    dataset: str
    epochs: int
    seed: int = 0
    lam: float | None = None          # lambda-hot's / the branched VAE's lambda
    batch_size: int = 128
    model: tuple = ()                 # other model overrides, as sorted (name, value) pairs
    n_train: int | None = None        # train on a seeded random slice of this size

    @property
    def name(self) -> str:
        lam = "" if self.lam is None else f"-lam{self.lam:g}"
        return f"{self.dataset}-{self.variant}{lam}-e{self.epochs}-seed{self.seed}"

    def overrides(self) -> dict:
        out = dict(self.model)
        if self.lam is not None:
            out["lam"] = float(self.lam)
        return out

    def command(self, folder: Path, data_dir: str | None = None) -> str:
        flags = " ".join(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float)
                         else f"--{k.replace('_', '-')} {v}" for k, v in self.overrides().items())
        out = Path(folder) / f"{self.name}.safetensors"
        return " ".join(filter(None, [
            "python -m latentviz train", f"--variant {self.variant}", f"--dataset {self.dataset}",
            f"--epochs {self.epochs}", f"--batch-size {self.batch_size}", f"--seed {self.seed}",
            f"--n-train {self.n_train}" if self.n_train else "", flags, f"--out {out}",
            f"--data-dir {data_dir}" if data_dir else ""]))


def extra_runs(settings: Settings) -> dict[str, tuple[ExtraRun, list[str]]]:
    """The sweep and seed runs, each once, with the groups ("sweep", "seeds") it is in."""
    s = settings
    common = dict(dataset=s.sweep_dataset, epochs=s.sweep_epochs, batch_size=s.sweep_batch_size,
                  model=tuple(sorted(s.sweep_model.items())), n_train=s.sweep_n_train)
    runs: dict[str, tuple[ExtraRun, list[str]]] = {}

    def add(run: ExtraRun, group: str):
        runs.setdefault(run.name, (run, []))[1].append(group)

    for variant in ("lambda_hot", "branched"):
        for lam in s.lambdas:
            add(ExtraRun(variant, lam=float(lam), seed=s.seeds[0], **common), "sweep")
    for seed in s.seeds:
        add(ExtraRun("lambda_hot", lam=float(s.seed_lambda), seed=seed, **common), "seeds")
        add(ExtraRun("vae", seed=seed, **common), "seeds")
    return runs


def run_extra(settings: Settings, results_path: Path, runs_dir: Path = DEFAULT_RUNS_DIR,
              data_dir: str | None = None, reuse: bool = False,
              generated_by: str | None = None) -> dict:
    """Train the sweep and seed runs one after another; write their metrics and commands
    to ``results_path`` (JSON) after each run, so an interrupted sweep keeps what it did.

    ``reuse``: take the metrics of a finished checkpoint already in ``runs_dir`` made by
    the same command instead of training it again. ``generated_by``: what to record as
    the command that made the file (``main`` passes its own).
    """
    from .. import checkpoints
    from ..runs import RunSpec, run_training
    from ..train import TrainConfig

    runs_dir, results_path = Path(runs_dir), Path(results_path)
    doc = {"generated_by": generated_by or (
               f"latentviz.report.run_extra(Settings.{'quick_mode' if settings.quick else 'full'}(), "
               f"{str(results_path)!r}, {str(runs_dir)!r}, {data_dir!r}, reuse={reuse})"),
           "started": _now(), "finished": None, "host": platform.node(),
           "protocol": {"dataset": settings.sweep_dataset, "epochs": settings.sweep_epochs,
                        "batch_size": settings.sweep_batch_size, "model": settings.sweep_model,
                        "n_train": settings.sweep_n_train,
                        "lambdas": list(settings.lambdas), "seeds": list(settings.seeds),
                        "seed_lambda": settings.seed_lambda, "classifiers": list(settings.classifiers)},
           "runs": []}
    t_all = time.perf_counter()
    for name, (run, groups) in extra_runs(settings).items():
        command = run.command(runs_dir, data_dir)
        path = runs_dir / f"{name}.safetensors"
        record = None
        if reuse and path.exists():
            try:
                meta = checkpoints.read_meta(path).meta
            except checkpoints.CheckpointError:
                meta = {}
            made = meta.get("made") or {}
            if made.get("command") == command and meta.get("epochs") == run.epochs and meta.get("metrics"):
                record = _record(run, groups, command, path, made, meta["metrics"])
                log.info("%s: reused %s", name, path)
        if record is None:
            tc = TrainConfig(epochs=run.epochs, batch_size=run.batch_size, seed=run.seed)
            spec = RunSpec(run.variant, run.dataset, run.overrides(), tc, path, data_dir, run.n_train)
            # No data= here: run_training slices the training set exactly as the CLI does.
            result = run_training(spec, classifiers=settings.classifiers, argv=shlex.split(command))
            made = checkpoints.read_meta(result.path).meta.get("made") or {}
            record = _record(run, groups, command, path, made, result.metrics)
            log.info("%s: recon %.2f in %.0fs", name, result.metrics["test_recon"], result.seconds)
        if run.variant == "vae" and "seeds" in groups:
            # The TreeVAE paper's "VAE + Agg" is a mean over runs: one per seed here too.
            record["agg"] = _agg_record(checkpoints.load(path)[0], run.dataset, data_dir, settings)
        doc["runs"].append(record)
        _write_json(results_path, doc)
    doc["finished"] = _now()
    doc["seconds"] = round(time.perf_counter() - t_all, 1)
    _write_json(results_path, doc)
    return doc


def _agg_record(model, dataset: str, data_dir, settings: Settings) -> dict:
    """The VAE + Agg baseline of section 4 on one model's test latents."""
    from .. import tree
    from ..data import load_dataset
    from ..embeddings import encode_means
    from ..projections import sample_indices

    data = load_dataset(dataset, data_dir)
    idx = sample_indices(len(data.y_test), settings.agg_points, settings.random_state)
    z = encode_means(model, data.x_test[idx]).numpy()
    s = tree.agglomerative_scores(z, data.y_test[idx].numpy(), (10, TREE_DP_LEAVES))
    return {"dp": s[TREE_DP_LEAVES]["dp"], "lp": s[TREE_DP_LEAVES]["lp"], "acc": s[10]["acc"],
            "nmi": s[10]["nmi"], "n_points": len(idx), "dp_lp_leaves": TREE_DP_LEAVES,
            "acc_nmi_leaves": 10}


def _record(run: ExtraRun, groups, command, path, made, metrics) -> dict:
    return {"name": run.name, "groups": list(groups), "variant": run.variant,
            "dataset": run.dataset, "epochs": run.epochs, "seed": run.seed, "lam": run.lam,
            "batch_size": run.batch_size, "n_train": run.n_train, "model": run.overrides(),
            "command": command,
            "checkpoint": str(path), "device": made.get("device"), "seconds": made.get("seconds"),
            "when": made.get("when"), "metrics": metrics}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def _write_json(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, default=_json_default)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; this is a docs file
    os.replace(tmp, path)


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def load_extra(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        log.warning("%s is not valid JSON (%s); the sweep tables are left empty", path, exc)
        return None


def _runs(extra: dict | None, group: str) -> list[dict]:
    return [r for r in (extra or {}).get("runs", []) if group in r.get("groups", ())]


def _extra_protocol(extra: dict) -> str:
    p = extra.get("protocol", {})
    runs = extra.get("runs", [])
    model = p.get("model") or {}
    devices = sorted({str(r.get("device")) for r in runs})
    secs = [r.get("seconds") or 0 for r in runs]
    whens = sorted(r["when"] for r in runs if r.get("when"))
    arch = "the shipped models' architecture (MLP 784-400-200, latent 20)" if not model else \
        "a tiny MLP (" + ", ".join(f"{k} {v}" for k, v in model.items()) + ")"
    n_train = p.get("n_train")
    data = (f"a seeded random slice of {n_train:,} training images (a different slice per seed), "
            "the full test set" if n_train else "the full training and test sets")
    return (f"Ours: {TITLES.get(p.get('dataset'), p.get('dataset'))}, {data}, {p.get('epochs')} "
            f"epochs (fewer than the shipped checkpoints), batch {p.get('batch_size')}, Adam lr 0.001, {arch}, "
            "grey levels with BCE summed per image; device " + " / ".join(devices)
            + f"; {len(runs)} runs, {sum(secs) / 60:.0f} min of training and evaluation in all"
            + (f", made {whens[0]} to {whens[-1]}" if whens else "")
            + ("" if extra.get("finished") else " (unfinished: the runs so far)") + ". "
            f"Made by `{str(extra.get('generated_by')).replace('`', '')}`; every run's exact command is in "
            f"`{EXTRA_RUNS_FILE}`, its checkpoint under `runs/` (not shipped).")


def _no_runs(head: str, what: str) -> str:
    return "\n".join([head, "", f"No {what} in `{EXTRA_RUNS_FILE}` yet: run "
                      "`python -m latentviz report --retrain` to make them."])
