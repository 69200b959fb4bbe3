"""The shipped checkpoints: each one's recipe, so any of them can be remade.

``RECIPES`` lists (variant, dataset, epochs, model overrides, seed). ``make`` trains a
recipe through :func:`latentviz.runs.run_training`, stores float16 weights, and checks
that the float16 copy scores the same as the float32 model it came from (the difference
goes into the checkpoint's metadata under ``made.half_check``); if it does not, the
float32 weights are kept instead.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints
from .metrics import CLASSIFIERS, evaluate_model
from .runs import RunSpec, partial_path, resume, run_training
from .train import TrainConfig

log = logging.getLogger(__name__)

# Above this difference in test recon BCE per image, float16 storage is refused: the
# z sample is seeded, so the remaining difference is the rounding of the weights.
HALF_TOLERANCE = 0.05
# Above this difference in any score in [0, 1] the metrics store (k-means, own clusters,
# DP, LP, ...), or any change of a count (leaves, active units), float16 is refused too:
# k-means on a TreeVAE's path embedding can land in another optimum under rounding alone
# (MNIST reference tree: k-means ACC 63.7 from float32 weights, 78.8 from float16).
SCORE_TOLERANCE = 0.005
_COUNTS = ("n_leaves", "n_leaves_mass", "tree_depth", "active_units")


@dataclass(frozen=True)
class Recipe:
    variant: str
    dataset: str
    epochs: int
    model: dict = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 128

    @property
    def filename(self) -> str:
        return f"{self.dataset}-{self.variant}.safetensors"

    def spec(self, folder: Path, data_dir=None) -> RunSpec:
        tc = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed)
        return RunSpec(self.variant, self.dataset, dict(self.model), tc, Path(folder) / self.filename,
                       data_dir, half=False)

    def command(self) -> str:
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.model.items())
        return (f"python -m latentviz train --variant {self.variant} --dataset {self.dataset} "
                f"--epochs {self.epochs} --batch-size {self.batch_size} --seed {self.seed} "
                f"{flags} --half --out checkpoints/{self.filename}").replace("  ", " ")


CORE = ("vae", "beta_vae", "cvae", "lambda_hot", "kmeans", "branched", "fixed_output")
RECIPES: list[Recipe] = (
    # beta 5 (the MNIST recipe) collapses the digits model: 64 pixels give a reconstruction
    # term of ~20 nats, which beta * KL outweighs (KL 0.000, no active unit; beta 3 too);
    # beta 1.5 keeps 6 active units and KL 1.7 against the VAE's 3.1.
    [Recipe(v, "digits", 60, {"beta": 1.5} if v == "beta_vae" else {}, batch_size=64)
     for v in CORE]
    + [Recipe(v, ds, 20) for ds in ("mnist", "fashion_mnist") for v in CORE]
    + [Recipe(v, "rotated_mnist", 20) for v in ("vae", "branched", "fixed_output")]
    # TreeVAE's epochs come from its schedule; `epochs` is unused for it.
    + [Recipe("treevae", "digits", 1, {"schedule": "fast"}, batch_size=64)]
)


def make(recipe: Recipe, folder: Path, data_dir=None, callback=None) -> Path:
    """Train ``recipe`` into ``folder`` with float16 weights (checked; see module doc)."""
    t0 = time.perf_counter()
    spec = recipe.spec(folder, data_dir)
    partial = partial_path(spec.out)
    if partial.exists():  # a run that was cut off continues from its last epoch
        result = resume(partial, callback=callback, data_dir=data_dir,
                        argv=recipe.command().split())
    else:
        result = run_training(spec, callback, argv=recipe.command().split())
    made = dict(checkpoints.read_meta(result.path).meta["made"],
                command=recipe.command(), seconds=round(time.perf_counter() - t0, 1))
    return store_checked_half(result.path, result.model, _data(recipe, data_dir), spec.train,
                              result.history, result.metrics, made)


def store_checked_half(path: Path, model, data, train_config, history, metrics: dict,
                       made: dict) -> Path:
    """Write ``model`` to ``path`` with float16 weights if the float16 copy scores as the
    float32 model did: test recon within HALF_TOLERANCE, every stored score in [0, 1]
    within SCORE_TOLERANCE and every count the same (the differences are recorded in
    ``made.half_check``); else float32, so the stored metrics are what the file gives.
    ``metrics`` are the run's own (``runs._train_and_save`` seeds their z sample and
    k-means with the run's seed), so the float16 copy is scored with that seed too: the
    same noise, and the difference is the weights' rounding alone. (The latent
    classifiers are not refitted for the check.)"""
    tmp = path.with_suffix(".half.tmp.safetensors")
    half_model, _ = checkpoints.load(checkpoints.save(tmp, model, dataset=data.name, half=True))
    tmp.unlink()
    again = evaluate_model(half_model, data, classifiers=(), random_state=train_config.seed)
    rk = "test_recon" if "test_recon" in metrics else "test_recon_sse"   # Gaussian: SSE
    half_recon = again[rk]
    diff = abs(half_recon - metrics[rk])
    shared = [k for k in again if k in metrics and not k.startswith("test_")]
    scores = max((abs(again[k] - metrics[k]) for k in shared if k not in _COUNTS), default=0.0)
    counts_kept = all(again[k] == metrics[k] for k in shared if k in _COUNTS)
    half = diff <= HALF_TOLERANCE and scores <= SCORE_TOLERANCE and counts_kept
    made = dict(made, half_check={"test_recon_float32": metrics[rk],
                                  "test_recon_float16": half_recon, "abs_diff": diff,
                                  "tolerance": HALF_TOLERANCE, "scores_abs_diff": scores,
                                  "scores_tolerance": SCORE_TOLERANCE,
                                  "counts_kept": counts_kept, "stored_half": half})
    if not half and made.get("command"):
        made["command"] = made["command"].replace(" --half", "")
    checkpoints.save(path, model, dataset=data.name, train_config=train_config, history=history,
                     metrics=metrics, made=made, half=half)
    log.info("%s: recon %.2f (float16: recon diff %.4f, scores diff %.4f, counts kept %s)",
             path.name, metrics[rk], diff, scores, counts_kept)
    return path


def ship_run(run: Path, out: Path, data_dir=None, command: str | None = None) -> Path:
    """Store a finished run (a ``latentviz train`` output) as a shipped checkpoint, with the
    same float16 check as :func:`make`; its metadata (command, seed, wall time) is kept.
    TreeVAE's shipped files are made this way: their schedule is not a Recipe's epochs.

    ``command`` replaces the recorded one where the run was forked from another's partial
    checkpoint (a 20-leaf tree resumed from a 10-leaf run's grown checkpoint records the
    10-leaf run's command): give the command that reproduces it. Either way the command
    is stored relative to the repository (no ``/work/...`` prefix of the build machine)."""
    from .data import load_dataset
    from .train import History, TrainConfig

    model, ck = checkpoints.load(run)
    meta = ck.meta
    history = History.from_dict(meta["history"]) if meta.get("history") else None
    made = dict(meta.get("made") or {})
    if command is not None:
        made["command"] = command
    if isinstance(made.get("command"), str):
        made["command"] = relative_command(made["command"])
    return store_checked_half(Path(out), model, load_dataset(ck.dataset, data_dir),
                              TrainConfig.from_dict(meta.get("train_config") or {}), history,
                              dict(ck.metrics), made)


REPO = Path(__file__).resolve().parents[1]


def relative_command(command: str, root: Path = REPO) -> str:
    """``command`` with paths inside ``root`` written relative to it, as a reader on another
    machine runs it from the repository's root: ``--out /work/main/runs/a.safetensors`` ->
    ``--out runs/a.safetensors``; ``--data-dir /work/main/.data`` -> ``--data-dir .data``."""
    prefix = str(root).rstrip("/") + "/"
    return " ".join(w.replace(prefix, "", 1) if w.startswith(prefix) else
                    ("." if w == prefix.rstrip("/") else w) for w in command.split(" "))


def add_activity(path: Path, data_dir=None) -> int:
    """Add ``active_units`` (Burda et al. 2016) to a shipped checkpoint's metrics, in
    place (:func:`update_metrics`). Returns the count (-1 for TreeVAE, whose latents are
    per node)."""
    from .data import load_dataset
    from .metrics import latent_activity

    model, ck = checkpoints.load(path)
    if getattr(model, "tree", None) is not None:
        return -1
    data = load_dataset(ck.dataset, data_dir)
    n = latent_activity(model, data.x_test, data.y_test).n_active
    update_metrics(path, {"active_units": float(n)})
    return n


def add_tree_metrics(path: Path, data_dir=None) -> dict:
    """Add the tree metrics a TreeVAE checkpoint lacks (of ``model.extra_metrics``: DP, LP,
    leaf ACC / NMI, the grown leaf count, the leaves holding at least 1% of the test
    images, the depth) to its stored metrics in place (:func:`update_metrics`), so a
    checkpoint shipped before a metric existed reports it; the figures it has are kept.
    Returns what was added ({} if none, or not a TreeVAE)."""
    from .data import load_dataset

    model, ck = checkpoints.load(path)
    if getattr(model, "tree", None) is None:
        return {}
    computed = model.extra_metrics(load_dataset(ck.dataset, data_dir))
    new = {k: float(v) for k, v in computed.items() if k not in ck.metrics}
    if new:
        update_metrics(path, new)
    return new


def update_metrics(path: Path, new: dict) -> None:
    """Merge ``new`` into a checkpoint's stored metrics; the tensors and the rest of the
    header are kept byte for byte (so its maps, keyed on the weights, stay valid)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    meta = json.loads(header[checkpoints.FORMAT])
    meta["metrics"] = dict(meta.get("metrics") or {}, **new)
    header[checkpoints.FORMAT] = json.dumps(meta, allow_nan=False)
    checkpoints.atomic_write(Path(path), save(tensors, metadata=header))


def _data(recipe: Recipe, data_dir):
    from .data import load_dataset
    return load_dataset(recipe.dataset, data_dir)


def make_all(folder: Path, data_dir=None, only: set[str] | None = None, skip_existing=True,
             recipes=None) -> list[Path]:
    out = []
    for r in recipes or RECIPES:
        if only and r.dataset not in only and r.variant not in only:
            continue
        target = Path(folder) / r.filename
        if skip_existing and target.exists():
            out.append(target)
            continue
        out.append(make(r, folder, data_dir))
    return out


__all__ = ["Recipe", "RECIPES", "make", "make_all", "ship_run", "add_activity", "add_tree_metrics",
           "update_metrics", "CLASSIFIERS"]
