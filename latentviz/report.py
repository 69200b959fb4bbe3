"""``python -m latentviz report``: docs/RESULTS.md and its figures, from the checkpoints.

Every table puts the papers' numbers beside ours and states our protocol:

1. reconstruction BCE per test image (Wang, Blair, Belkhale, Table 1);
2. the lambda-hot argmax accuracy (same paper, sec. 5.1);
3. branched VAE vs VAE (and the fixed-output VAE): classifiers on the latents and
   k-means clustering (Yevick, arXiv 2401.02526), on MNIST and rotated MNIST;
4. TreeVAE's DP / LP / ACC / NMI (Manduchi et al. 2023, Table 1) beside a
   "VAE latents + agglomerative clustering" baseline computed here;
5. a lambda sweep of lambda-hot and the branched VAE;
6. the spread over seeds.

Tables 1-4 read the shipped checkpoints (their stored metrics; the latents are recomputed
only for the agglomerative baseline and the figures). Tables 5-6 read
``<out>/results/extra_runs.json``, which ``--retrain`` regenerates by training the sweep
and seed runs (kept under ``runs/report/``, git-ignored); ``--retrain`` also remakes the
shipped checkpoints through :func:`latentviz.zoo.make_all`. ``--quick`` does all of it on
the 8x8 digits with tiny models (the test suite's mode).

Figures are PNG files drawn with matplotlib (Agg backend), seeded.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RESULTS_FILE = "RESULTS.md"
EXTRA_RUNS_FILE = "results/extra_runs.json"
FIGURES_DIR = "figures"
DEFAULT_RUNS_DIR = Path("runs") / "report"


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """What the report trains and draws: the full sizes, or ``quick`` ones for the tests.

    ``source`` maps each dataset the papers use to the dataset our numbers come from (the
    identity, except in quick mode, where every row is filled from the 8x8 digits).
    """

    quick: bool = False
    source: dict = field(default_factory=lambda: {
        "mnist": "mnist", "fashion_mnist": "fashion_mnist", "rotated_mnist": "rotated_mnist"})
    sweep_dataset: str = "mnist"
    sweep_epochs: int = 5
    sweep_batch_size: int = 128
    sweep_model: dict = field(default_factory=dict)
    sweep_n_train: int | None = 20000  # a seeded slice of the training set (CPU budget)
    lambdas: tuple = (0.0, 1.0, 5.0, 10.0, 100.0)
    seeds: tuple = (0, 1, 2)
    seed_lambda: float = 5.0          # lambda-hot's lambda in the seed runs (the paper's)
    # Latent classifiers of the sweep and seed runs: kNN only, as the others cost several
    # times the 5 epochs of training on a shared CPU (the shipped checkpoints have all four).
    classifiers: tuple = ("knn",)
    tsne_points: int = 2500
    agg_points: int = 10000           # test points for the agglomerative baseline
    n_samples: int = 8                # images per row in the sample figures
    random_state: int = 0

    @classmethod
    def full(cls) -> "Settings":
        return cls()

    @classmethod
    def quick_mode(cls) -> "Settings":
        return cls(quick=True, source={"mnist": "digits", "fashion_mnist": "digits",
                                       "rotated_mnist": "digits"},
                   sweep_dataset="digits", sweep_epochs=2, sweep_batch_size=64,
                   sweep_model={"latent_dim": 12, "hidden": 64}, sweep_n_train=None,
                   lambdas=(0.0, 5.0),
                   seeds=(0, 1), tsne_points=300, agg_points=360, n_samples=6)


# ----------------------------------------------------------------------------- sweep and seed runs

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
    from . import checkpoints
    from .runs import RunSpec, run_training
    from .train import TrainConfig

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
    from . import tree
    from .data import load_dataset
    from .embeddings import encode_means
    from .projections import sample_indices

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


# ----------------------------------------------------------------------------- the papers' numbers

TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "rotated_mnist": "rotated MNIST",
          "digits": "digits (8x8)"}
VARIANT_TITLES = {"vae": "VAE", "beta_vae": "beta-VAE (beta = 5)", "cvae": "CVAE",
                  "lambda_hot": "lambda-hot (lambda = 5)", "kmeans": "k-means prior (K = 10)",
                  "branched": "branched VAE", "fixed_output": "fixed-output VAE",
                  "treevae": "TreeVAE"}

LH_PAPER = "Wang, Blair, Belkhale, *Encouraging Categorical Meaning in the Latent Space of a VAE*"
BV_PAPER = "Yevick, *Branched Variational Autoencoder Classifiers* (arXiv 2401.02526)"
TV_PAPER = "Manduchi et al., *Tree Variational Autoencoders* (NeurIPS 2023, arXiv 2306.08984)"

#: Table 1 of the lambda-hot paper: reconstruction BCE per test image.
PAPER_RECON = {
    "mnist": {"vae": 80.97, "beta_vae": 120.76, "cvae": 80.15, "lambda_hot": 79.92, "kmeans": 77.59},
    "fashion_mnist": {"vae": 228.87, "beta_vae": 250.37, "cvae": 228.14, "lambda_hot": 227.39,
                      "kmeans": 225.68},
}
#: Sec. 5.1 of the lambda-hot paper: argmax over the class dims, % of test images.
PAPER_ARGMAX = {"mnist": 91.9, "fashion_mnist": 81.27}
#: The branched-VAE paper's headline: an NN classifier on the latents, MNIST, %.
PAPER_BRANCHED_NN = {("mnist", "branched"): 98.5, ("mnist", "vae"): 97.1}
#: Table 1 of the TreeVAE paper, % (mean, std over 10 runs): DP, LP, ACC, NMI.
PAPER_TREE = {
    "mnist": {"treevae": ((87.9, 4.9), (96.0, 1.9), (90.2, 7.5), (90.0, 4.6)),
              "vae_agg": ((79.9, 2.2), (90.8, 1.4), (86.6, 4.9), (81.6, 2.0))},
    "fashion_mnist": {"treevae": ((54.4, 2.4), (71.4, 2.0), (63.6, 3.3), (64.7, 1.4)),
                      "vae_agg": ((44.3, 2.5), (65.9, 2.3), (54.9, 4.4), (56.1, 3.2))},
}
TREE_DP_LEAVES = 20   # the TreeVAE paper's DP / LP are on trees grown (or cut) to 20 leaves
AGG_LABEL = f"VAE + Agg (DP, LP: {TREE_DP_LEAVES} leaves; ACC, NMI: 10)"
MISSING = "—"


def _leaves_held(metrics) -> int | None:
    """A TreeVAE's leaves holding at least 1% of the test images, if its metrics say."""
    held = metrics.get("n_leaves_mass")
    return int(held) if isinstance(held, (int, float)) and math.isfinite(held) else None


# ----------------------------------------------------------------------------- markdown helpers

def md_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{v:.{digits}f}"


def _pct(v, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return f"{100 * v:.{digits}f}"


def _paper(v) -> str:
    """A paper's number as the paper prints it (its mean ± std where it gives one)."""
    if v is None:
        return MISSING
    if isinstance(v, tuple):
        return f"{v[0]:.1f} ± {v[1]:.1f}"
    return f"{v:g}"


def _diff(ours, paper, digits: int = 2) -> str:
    if ours is None or paper is None or (isinstance(ours, float) and math.isnan(ours)):
        return MISSING
    return f"{ours - paper:+.{digits}f}"


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# ----------------------------------------------------------------------------- checkpoints

@dataclass
class Shipped:
    """The checkpoints the report reads, by (dataset, variant), and what is missing."""

    folder: Path
    found: dict = field(default_factory=dict)      # (dataset, variant) -> Checkpoint
    in_progress: set = field(default_factory=set)  # (dataset, variant) with a .partial file

    @classmethod
    def scan(cls, folder: Path) -> "Shipped":
        from .checkpoints import list_checkpoints

        out = cls(Path(folder))
        for c in list_checkpoints(folder, partial=True):
            if c.error:
                log.warning("skipping %s: %s", c.path, c.error)
                continue
            key = (c.dataset, c.variant)
            if c.path.name.endswith(".partial.safetensors"):
                out.in_progress.add(key)
                continue
            # The zoo's own file name wins over any other checkpoint of the same pair.
            if key not in out.found or c.path.name == f"{c.dataset}-{c.variant}.safetensors":
                out.found[key] = c
        out.in_progress -= set(out.found)
        return out

    def get(self, dataset: str, variant: str):
        return self.found.get((dataset, variant))

    def metric(self, dataset: str, variant: str, key: str):
        c = self.get(dataset, variant)
        return None if c is None else c.metrics.get(key)


def _arch(cfg: dict) -> str:
    shape = cfg.get("image_shape") or (1, 28, 28)
    n_in = int(np.prod(shape))
    h, d = cfg.get("hidden"), cfg.get("latent_dim")
    if cfg.get("backbone", "mlp") == "mlp":
        return (f"MLP {n_in}-{h}-{h // 2} -> (mu, log var) in R^{d}; decoder {d}-{h // 2}-{h}-{n_in} "
                "(Bernoulli logits), ReLU")
    return f"{cfg.get('backbone')} backbone, hidden {h}, latent {d}"


def _values(ckpts, fn) -> str:
    """The distinct values of fn(checkpoint) over ``ckpts``, in order, joined by " / "."""
    seen = dict.fromkeys(str(v) for v in map(fn, ckpts) if v is not None)
    return " / ".join(seen) or MISSING


def protocol_line(ckpts) -> str:
    """Our protocol, read from the checkpoints' metadata."""
    ckpts = [c for c in ckpts if c is not None]
    if not ckpts:
        return "Ours: no checkpoint yet."

    def cfg(key):
        return _values(ckpts, lambda c: (c.meta.get("config") or {}).get(key))

    def train(key):
        return _values(ckpts, lambda c: (c.meta.get("train_config") or {}).get(key))

    return (f"Ours: {_values(ckpts, lambda c: _arch(c.meta.get('config') or {}))}; latent size "
            f"{cfg('latent_dim')}; {_values(ckpts, lambda c: c.epochs)} epochs, batch "
            f"{train('batch_size')}, Adam lr {train('lr')}; seed {train('seed')} (one run per "
            "cell); grey levels in [0, 1] (no binarisation), BCE summed over pixels per image, "
            "one seeded z sample per test image; device "
            f"{_values(ckpts, lambda c: (c.meta.get('made') or {}).get('device'))}.")


# ----------------------------------------------------------------------------- the report

@dataclass
class Context:
    """What the sections share: settings, checkpoints, loaded data and models, output."""

    settings: Settings
    shipped: Shipped
    out: Path
    data_dir: str | None = None
    extra: dict | None = None
    missing: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    _data: dict = field(default_factory=dict)
    _models: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)      # latents and maps, by what they depend on

    def src(self, dataset: str) -> str:
        return self.settings.source.get(dataset, dataset)

    def ckpt(self, dataset: str, variant: str):
        return self.shipped.get(self.src(dataset), variant)

    def metric(self, dataset: str, variant: str, key: str):
        return self.shipped.metric(self.src(dataset), variant, key)

    def data(self, name: str):
        """The dataset, or None (logged) where it cannot be loaded."""
        from .data import DatasetError, load_dataset

        if name not in self._data:
            try:
                self._data[name] = load_dataset(name, self.data_dir)
            except DatasetError as exc:
                log.warning("cannot load %s: %s", name, exc)
                self._data[name] = None
        return self._data[name]

    def model(self, dataset: str, variant: str):
        from .checkpoints import load

        c = self.ckpt(dataset, variant)
        if c is None:
            return None
        if c.path not in self._models:
            self._models[c.path] = load(c.path)[0]
        return self._models[c.path]

    def figure_path(self, name: str) -> Path:
        folder = self.out / FIGURES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.figures.append(name)
        return folder / name

    def figure_link(self, name: str, alt: str) -> str:
        return f"![{alt}]({FIGURES_DIR}/{name})"


def _ours_title(ctx: Context, dataset: str) -> str:
    src = ctx.src(dataset)
    return TITLES[dataset] if src == dataset else f"{TITLES[dataset]} (ours on {TITLES[src]})"


def _missing_cell(ctx: Context, dataset: str, variant: str) -> str:
    key = (ctx.src(dataset), variant)
    ctx.missing.append(key)
    return "training" if key in ctx.shipped.in_progress else MISSING


def section_recon(ctx: Context) -> str:
    datasets = ("mnist", "fashion_mnist")
    variants = ("vae", "beta_vae", "cvae", "lambda_hot", "kmeans", "branched", "fixed_output")
    header = ["Model"]
    for d in datasets:
        header += [f"{TITLES[d]}: paper", f"{_ours_title(ctx, d)}: ours", "ours - paper"]
    rows = []
    for v in variants:
        row = [VARIANT_TITLES[v] + (" *" if v == "fixed_output" else "")]
        for d in datasets:
            paper = PAPER_RECON[d].get(v)
            ours = ctx.metric(d, v, "test_recon")
            row += [_paper(paper) if paper is not None else "not in paper",
                    _num(ours) if ours is not None else _missing_cell(ctx, d, v), _diff(ours, paper)]
        rows.append(row)
    notes = []
    for d in datasets:
        ours = {v: ctx.metric(d, v, "test_recon") for v in PAPER_RECON[d]}
        if all(x is not None for x in ours.values()):
            rank_p = sorted(PAPER_RECON[d], key=PAPER_RECON[d].get)
            rank_o = sorted(ours, key=ours.get)
            same = "the same as" if rank_p == rank_o else "unlike"
            notes.append(f"- {TITLES[d]}: our order, best first: "
                         + " < ".join(VARIANT_TITLES[v].split(" (")[0] for v in rank_o)
                         + f" ({same} the paper's: "
                         + " < ".join(VARIANT_TITLES[v].split(" (")[0] for v in rank_p) + ").")
    ckpts = [ctx.ckpt(d, v) for d in datasets for v in variants]
    return "\n".join([
        "## 1. Reconstruction BCE per test image (lambda-hot paper, Table 1)", "",
        f"Paper: {LH_PAPER}, Table 1: \"reconstruction loss (binary cross-entropy)\" on the test "
        "set; latent size 20 (lambda-hot: 10 class dims + 10 shared), lambda = 5, beta = 5. "
        "It does not state the architecture, epochs, optimiser, whether the images were "
        "binarised, or the number of runs (one number per cell, no spread).", "",
        protocol_line(ckpts), "",
        md_table(header, rows), "",
        "Lower is better. \\* The fixed-output VAE's BCE is measured against its class template "
        "(the class-mean image), not against the input: its decoder is trained to output the "
        "template, so this number is not a reconstruction error and is not comparable with the "
        "rows above. The branched VAE is in neither paper's Table 1; it is listed for reference.",
        *(["", "Ranking:", *notes] if notes else []), "",
        "Protocol differences: the paper's epochs and architecture are unknown, so the absolute "
        "numbers agree in scale (a 20-d MLP VAE on grey-level MNIST), not by construction; "
        "ours are one seed each (see section 6 for the seed spread at 5 epochs).",
    ])


def section_argmax(ctx: Context) -> str:
    rows = []
    for d in ("mnist", "fashion_mnist"):
        ours = ctx.metric(d, "lambda_hot", "acc_own")
        rows.append([_ours_title(ctx, d), _paper(PAPER_ARGMAX[d]),
                     _pct(ours, 2) if ours is not None else _missing_cell(ctx, d, "lambda_hot"),
                     _diff(None if ours is None else 100 * ours, PAPER_ARGMAX[d]),
                     _pct(ctx.metric(d, "lambda_hot", "acc_nn")),
                     _pct(ctx.metric(d, "lambda_hot", "kmeans_acc"))])
    ckpts = [ctx.ckpt(d, "lambda_hot") for d in ("mnist", "fashion_mnist")]
    return "\n".join([
        "## 2. Lambda-hot argmax accuracy (lambda-hot paper, sec. 5.1)", "",
        "Accuracy (%) of classifying a test image by the argmax of the first 10 dimensions of "
        "its posterior mean (no classifier is trained). Paper: lambda = 5, latent size 20.", "",
        protocol_line(ckpts), "",
        md_table(["Dataset", "argmax acc: paper", "argmax acc: ours", "ours - paper",
                  "NN on latents: ours", "k-means ACC: ours"], rows), "",
        "The last two columns are not in the paper: an MLP classifier fitted on the training "
        "latents, and unsupervised k-means (K = 10) on the test latents with Hungarian matching.",
    ])


BRANCHED_COLS = [("acc_nn", "NN acc"), ("acc_knn", "kNN acc"), ("acc_forest", "forest acc"),
                 ("acc_logreg", "logreg acc"), ("acc_own", "own classifier acc"),
                 ("kmeans_nmi", "k-means NMI"), ("kmeans_acc", "k-means ACC"),
                 ("kmeans_ari", "k-means ARI")]


def section_branched(ctx: Context) -> str:
    header = ["Dataset", "Model", "NN acc: paper"] + [f"{label}: ours" for _, label in BRANCHED_COLS] \
        + ["recon BCE: ours"]
    rows, ckpts = [], []
    for d in ("mnist", "rotated_mnist"):
        for v in ("vae", "branched", "fixed_output"):
            c = ctx.ckpt(d, v)
            ckpts.append(c)
            lam = f" (lambda = {c.meta['config'].get('lam'):g})" if c is not None and v == "branched" else ""
            row = [_ours_title(ctx, d), VARIANT_TITLES[v] + lam + (" *" if v == "fixed_output" else ""),
                   _paper(PAPER_BRANCHED_NN.get((d, v)))]
            if c is None:
                row += [_missing_cell(ctx, d, v)] + [MISSING] * len(BRANCHED_COLS)
            else:
                row += [_pct(c.metrics.get(k)) for k, _ in BRANCHED_COLS] + [_num(c.metrics.get("test_recon"))]
            rows.append(row)
    return "\n".join([
        "## 3. Branched VAE vs VAE: classifiers and clustering on the latents (branched-VAE paper)", "",
        f"Paper: {BV_PAPER}: an NN classifier on the latents scores 98.5% for the branched VAE vs "
        "97.1% for the VAE on MNIST; it also reports kNN, random forest and clustering NMI / ACC / "
        "ARI, and rotated digits, but the summary we work from gives no other numbers, so those "
        f"paper cells are {MISSING}. Its network is a CNN with 2-d and 10-d latents; alpha and "
        "lambda are not given numerically.", "",
        protocol_line(ckpts), "",
        md_table(header, rows), "",
        "All accuracies and scores in %. Classifiers are fitted on the latent means of (up to "
        "20,000) training images and scored on the 10,000 test images: NN = MLP (128 hidden, "
        "early stopping), kNN with k = 10, random forest with 100 trees, logistic regression. "
        "Own classifier = the branched VAE's branch on the posterior mean. k-means: K = 10 on the "
        "test latents, ACC with Hungarian matching. Rotated MNIST: every image rotated by a seeded "
        "uniform angle in [-180, 180) degrees.", "",
        "\\* Fixed-output VAE: the decoder's target is the class-mean image, so the encoder is "
        "trained with the labels (through the target); its recon BCE is measured against that "
        "template, not the input. Protocol differences: MLP and a 20-d latent instead of the "
        "paper's CNN and 2/10-d latents; our lambda = 10 is our choice (section 5 sweeps it).",
    ])


def _test_latents(ctx: Context, dataset: str, variant: str, n: int | None = None):
    """Posterior means and labels of (a seeded subset of) the test set, or None."""
    from .embeddings import encode_means
    from .projections import sample_indices

    key = ("latents", ctx.src(dataset), variant, n)
    if key not in ctx.cache:
        model, data = ctx.model(dataset, variant), ctx.data(ctx.src(dataset))
        if model is None or data is None:
            return None
        idx = sample_indices(len(data.y_test), n or len(data.y_test), ctx.settings.random_state)
        x, y = data.x_test[idx], data.y_test[idx]
        z = encode_means(model, x, y if model.conditional else None).numpy()
        ctx.cache[key] = (z, y.numpy(), idx)
    return ctx.cache[key]


def section_tree(ctx: Context) -> str:
    from . import tree

    keys = ("dp", "lp", "acc", "nmi")
    header = ["Dataset", "Method"] + [f"{k.upper()}: {w}" for k in keys for w in ("paper", "ours")]
    rows, ckpts, notes = [], [], []
    for d in ("mnist", "fashion_mnist"):
        paper = PAPER_TREE[d]
        tv = ctx.ckpt(d, "treevae")
        ckpts.append(tv)
        n_tree = None
        if tv is None:
            ours_tv = [_missing_cell(ctx, d, "treevae")] + [MISSING] * 3
        else:
            m = tv.metrics
            n_tree = int(m.get("n_leaves", 0)) or None
            ours_tv = [_pct(m.get("dp")), _pct(m.get("lp")), _pct(m.get("leaf_acc")), _pct(m.get("leaf_nmi"))]
        held = tv and _leaves_held(tv.metrics)
        label = "TreeVAE" + (f" (ours: {n_tree} leaves" + (f", {int(held)} with >= 1% of the "
                                                           "test images)" if held else ")")
                             if n_tree else "")
        rows.append([_ours_title(ctx, d), label] + [x for pair in zip(map(_paper, paper["treevae"]), ours_tv)
                                                     for x in pair])
        lat = _test_latents(ctx, d, "vae", ctx.settings.agg_points)
        if lat is None:
            cell = MISSING if ctx.ckpt(d, "vae") is not None else _missing_cell(ctx, d, "vae")
            rows.append([_ours_title(ctx, d), AGG_LABEL]
                        + [x for p in paper["vae_agg"] for x in (_paper(p), cell)])
        else:
            z, y, _ = lat
            t0 = time.perf_counter()
            leaves = tuple(sorted({10, TREE_DP_LEAVES} | ({n_tree} if n_tree else set())))
            key = ("agg", ctx.src(d), len(z), leaves)
            if key not in ctx.cache:
                ctx.cache[key] = tree.agglomerative_scores(z, y, leaves)
            agg = ctx.cache[key]
            log.info("agglomerative baseline on %d %s latents in %.1fs", len(z), d, time.perf_counter() - t0)
            ours = [_pct(agg[TREE_DP_LEAVES]["dp"]), _pct(agg[TREE_DP_LEAVES]["lp"]),
                    _pct(agg[10]["acc"]), _pct(agg[10]["nmi"])]
            rows.append([_ours_title(ctx, d), AGG_LABEL]
                        + [x for pair in zip(map(_paper, paper["vae_agg"]), ours) for x in pair])
            if n_tree:  # the like-for-like comparison with our TreeVAE: all four on its leaves
                a = agg[n_tree]
                rows.append([_ours_title(ctx, d), f"VAE + Agg ({n_tree} leaves, as our TreeVAE)"]
                            + [x for k in keys for x in (MISSING, _pct(a[k]))])
            notes.append(f"- {_ours_title(ctx, d)}: Ward on {len(z):,} test latents of our VAE "
                         f"checkpoint ({ctx.ckpt(d, 'vae').epochs} epochs); DP of the full, uncut "
                         f"dendrogram: {_pct(agg[None]['dp'])}%.")
    tv_desc = []
    for c in ckpts:
        if c is not None:
            cfg, tc, m = c.meta["config"], c.meta.get("train_config") or {}, c.metrics
            tv_desc.append(f"{TITLES.get(c.dataset, c.dataset)}: schedule `{cfg.get('schedule')}`, "
                           f"up to {cfg.get('max_leaves')} leaves (grew {int(m.get('n_leaves', 0))}"
                           + (f", {_leaves_held(m)} with >= 1% of the test images"
                              if _leaves_held(m) else "") + ", "
                           f"depth {int(m.get('tree_depth', 0))}), node latent {cfg.get('node_latent_dim')}, "
                           f"batch {tc.get('batch_size')}, seed {tc.get('seed')}, one run, device "
                           f"{(c.meta.get('made') or {}).get('device')}")
    return "\n".join([
        "## 4. TreeVAE: hierarchical clustering (TreeVAE paper, Table 1)", "",
        f"Paper: {TV_PAPER}, Table 1, test set, mean ± std over 10 runs, grey-level images with "
        "BCE; the reference schedule (150 epochs per growth step, 200 of fine-tuning). DP and LP "
        "are computed on trees grown to 20 leaves, ACC and NMI on trees with 10 leaves (one per "
        "class); the baselines' agglomerative dendrograms are cut to the same numbers of leaves. "
        "The paper's \"VAE + Agg\" linkage is not stated (scikit-learn's default is Ward).", "",
        "Ours: TreeVAE " + ("; ".join(tv_desc) if tv_desc else
                            f"{MISSING}: no TreeVAE checkpoint in `{ctx.shipped.folder}` yet (the "
                            "rows fill in when one lands there)") + ". VAE + Agg: "
        "scikit-learn `AgglomerativeClustering(linkage=\"ward\")` on the posterior means of our "
        "shipped VAE, its merge tree cut to its top merges; DP and LP from "
        "`latentviz.tree.dendrogram_purity` / `leaf_purity` over that tree. One run each.", "",
        md_table(header, rows), "",
        "All in %. DP = dendrogram purity, LP = leaf purity, ACC = Hungarian-matched accuracy, "
        f"NMI = normalised mutual information. {MISSING} = no such number (the paper has no row "
        "for our extra cut) or no checkpoint yet.",
        *([""] + notes if notes else []), "",
        "Protocol differences: " + (
            "our TreeVAE runs its schedule " + _values([c for c in ckpts if c], lambda c: f"`{c.meta['config'].get('schedule')}`")
            + " (`fast` is about 1/15 of the reference epochs) and grows at most `max_leaves` "
            "leaves, so where that is under 20 its DP and LP are over fewer leaves than the "
            "paper's (fewer leaves, lower DP and LP: compare with the VAE + Agg row cut to the "
            "same leaves); one seed, not 10. " if any(ckpts) else "")
        + "Our VAE is the 20-d MLP VAE of section 1 (one seed; section 6 has three seeds of a "
        "5-epoch VAE), not the paper's.",
        *_tree_figures(ctx),
    ])


def _tree_figures(ctx: Context) -> list[str]:
    lines = []
    for d in ("mnist", "fashion_mnist"):
        name = f"treevae_{ctx.src(d)}.png"
        if name not in ctx.figures and _figure(ctx, name, lambda p, d=d: fig_tree(ctx, d, p)):
            lines += ["", f"**TreeVAE on {_ours_title(ctx, d)}.**", "", ctx.figure_link(name, "TreeVAE tree")]
    return lines


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


SWEEP_COLS = [("test_recon", "recon BCE", _num), ("acc_own", "own acc", _pct),
              ("acc_knn", "kNN acc", _pct), ("kmeans_nmi", "k-means NMI", _pct),
              ("kmeans_acc", "k-means ACC", _pct)]


def _no_runs(head: str, what: str) -> str:
    return "\n".join([head, "", f"No {what} in `{EXTRA_RUNS_FILE}` yet: run "
                      "`python -m latentviz report --retrain` to make them."])


def section_sweep(ctx: Context) -> str:
    runs = _runs(ctx.extra, "sweep")
    head = "## 5. Lambda sweep: reconstruction vs accuracy vs clustering"
    if not runs:
        return _no_runs(head, "sweep results")
    by = {(r["variant"], float(r["lam"])): r["metrics"] for r in runs}
    lams = sorted({float(r["lam"]) for r in runs})
    header = ["lambda"] + [f"{v}: {label}" for v in ("lambda-hot", "branched") for _, label, _f in SWEEP_COLS]
    rows = []
    for lam in lams:
        row = [f"{lam:g}"]
        for v in ("lambda_hot", "branched"):
            m = by.get((v, lam))
            row += [f(m.get(k)) if m else MISSING for k, _l, f in SWEEP_COLS]
        rows.append(row)
    paper = ["paper (lambda-hot: lambda = 5, MNIST, its epochs)",
             _paper(PAPER_RECON["mnist"]["lambda_hot"]), _paper(PAPER_ARGMAX["mnist"]),
             MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING]
    rows.append(paper)
    fig = "lambda_sweep.png"
    drawn = _figure(ctx, fig, lambda p: fig_sweep(runs, p))
    vae0 = next((r["metrics"] for r in _runs(ctx.extra, "seeds")
                 if r["variant"] == "vae" and r["seed"] == runs[0]["seed"]), None)
    check = []
    if vae0 and (lh0 := by.get(("lambda_hot", 0.0))) and (br0 := by.get(("branched", 0.0))):
        same = all(abs(m["test_recon"] - vae0["test_recon"]) < 1e-3 for m in (lh0, br0))
        check = ["", f"Check: at lambda = 0 the lambda-hot and branched runs score recon "
                 f"{lh0['test_recon']:.3f} and {br0['test_recon']:.3f}, the plain VAE run of the same "
                 f"seed {vae0['test_recon']:.3f}: "
                 + ("identical, as they must be (same initialisation of the encoder and decoder, "
                    "same loss, same batches and noise)." if same else
                    "NOT identical, although the three losses are the same: investigate.")]
    return "\n".join([
        head, "",
        "lambda is the lambda-hot prior's class-centre distance (the paper uses 5 and says "
        "values above 1 work better) and the branched VAE's weight of the classifier's "
        "cross-entropy (the paper gives no value). lambda = 0 makes both a plain VAE: the "
        "lambda-hot prior becomes N(0, I), and the branch gets no gradient into the encoder, so "
        "their own classifiers are untrained there (accuracy at or below chance).", "",
        _extra_protocol(ctx.extra), "",
        md_table(header, rows), "",
        "recon BCE per test image (lower is better); accuracies and clustering scores in %. "
        "own acc = the lambda-hot argmax / the branch's prediction; kNN acc = k = 10 nearest "
        "neighbours on the latents (fitted on the training slice); k-means (K = 10) on the test "
        "latents. The branched-VAE paper gives no lambda and no per-lambda numbers. "
        "The commands are the CLI's; the CLI would also fit the other three latent classifiers "
        "(add `--classifiers knn` to skip them, as the report does to save CPU; the shipped "
        "checkpoints of sections 1-3 have all four). The paper row's numbers are at the "
        "paper's (unstated) epochs on the full training set, ours at the sweep's, so compare "
        "the trends, not the levels.",
        *check,
        *(["", ctx.figure_link(fig, "lambda sweep")] if drawn else []),
    ])


def section_seeds(ctx: Context) -> str:
    runs = _runs(ctx.extra, "seeds")
    head = "## 6. Spread over seeds"
    if not runs:
        return _no_runs(head, "seed runs")
    lam = ctx.extra.get("protocol", {}).get("seed_lambda", 5.0)
    agg = PAPER_TREE["mnist"]["vae_agg"]
    lines = [("vae", "test_recon", "recon BCE", PAPER_RECON["mnist"]["vae"], _num, 1),
             ("vae", "acc_knn", "kNN acc on latents (%)", None, _pct, 100),
             ("vae", "kmeans_nmi", "k-means NMI (%)", None, _pct, 100),
             ("lambda_hot", "test_recon", "recon BCE", PAPER_RECON["mnist"]["lambda_hot"], _num, 1),
             ("lambda_hot", "acc_own", "argmax acc (%)", PAPER_ARGMAX["mnist"], _pct, 100),
             ("lambda_hot", "kmeans_nmi", "k-means NMI (%)", None, _pct, 100),
             ("vae", "agg.dp", f"VAE + Agg DP, {TREE_DP_LEAVES} leaves (%)", agg[0], _pct, 100),
             ("vae", "agg.lp", f"VAE + Agg LP, {TREE_DP_LEAVES} leaves (%)", agg[1], _pct, 100),
             ("vae", "agg.acc", "VAE + Agg ACC, 10 leaves (%)", agg[2], _pct, 100),
             ("vae", "agg.nmi", "VAE + Agg NMI, 10 leaves (%)", agg[3], _pct, 100)]
    rows = []
    for v, key, label, paper, f, scale in lines:
        sel = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["seed"])
        group, _, name = key.rpartition(".")   # "agg.dp": the record's "agg" table
        found = [((r.get(group) or {}) if group else r["metrics"]).get(name) for r in sel]
        vals = [x for x in found if x is not None]
        if not vals:
            continue
        mean, std = _mean_std(vals)
        rows.append([VARIANT_TITLES[v].split(" (")[0] + (f" (lambda = {lam:g})" if v == "lambda_hot" else ""),
                     label, _paper(paper), f"{mean * scale:.2f} ± {std * scale:.2f}",
                     f"{min(vals) * scale:.2f} to {max(vals) * scale:.2f}",
                     ", ".join(f(x) for x in vals), str(len(vals))])
    return "\n".join([
        head, "",
        "The lambda-hot paper reports one number per cell; the TreeVAE paper reports mean ± std "
        "over 10 runs. Here: the same model at several seeds (initialisation, batch order and "
        "noise all follow the seed), to show how much of a gap to the paper one seed can explain.", "",
        _extra_protocol(ctx.extra), "",
        md_table(["Model", "Metric", "paper", "ours: mean ± std", "ours: min to max",
                  "ours: per seed", "seeds"], rows), "",
        "std is the sample standard deviation (ddof = 1). Paper values: the lambda-hot paper's "
        "Table 1 and sec. 5.1 (MNIST, at its unstated epochs on the full training set); the "
        "TreeVAE paper's Table 1 for VAE + Agg (mean ± std over 10 runs of its own VAE). VAE + Agg "
        "here: section 4's Ward baseline on each seed's test latents.",
    ])


# ----------------------------------------------------------------------------- figures

def _figure(ctx: Context, name: str, draw) -> bool:
    """Draw a figure into ``<out>/figures/name`` with ``draw(path) -> bool`` (False: its
    inputs are missing and nothing was written)."""
    path = ctx.figure_path(name)
    if draw(path):
        log.info("wrote %s", path)
        return True
    ctx.figures.remove(name)
    return False


def _new_figure(w: float, h: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas on save

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig, path: Path) -> bool:
    fig.savefig(path, dpi=110, facecolor="white", metadata={"Software": None})
    return True


def mosaic(images, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Images (R, N, C, H, W) or (N, C, H, W) in [0, 1] -> one grey array for imshow."""
    from .figures import tile_rows

    a = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, np.float32)
    if a.ndim == 4:
        a = a[None]
    return tile_rows(a.mean(axis=2, keepdims=True), pad, fill)[0]


def _show(ax, images, title: str | None = None, row_labels=None, pad: int = 1):
    m = mosaic(images, pad)
    ax.imshow(m, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        h = (m.shape[0] - pad) / len(row_labels)
        ax.set_yticks([pad / 2 + h * (i + 0.5) for i in range(len(row_labels))], row_labels, fontsize=8)
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def _class_names(ctx: Context, dataset: str) -> tuple[str, ...]:
    data = ctx.data(ctx.src(dataset))
    if data is not None:
        return data.class_names
    from .data import FASHION_CLASSES, MNIST_CLASSES
    return FASHION_CLASSES if dataset == "fashion_mnist" else MNIST_CLASSES


TSNE_VARIANTS = ("vae", "beta_vae", "lambda_hot", "kmeans")


def fig_tsne(ctx: Context, path: Path) -> bool:
    from .projections import tsne

    datasets = ("mnist", "fashion_mnist")
    if not any(ctx.ckpt(d, v) for d in datasets for v in TSNE_VARIANTS):
        return False
    fig = _new_figure(16, 8.6)
    axes = fig.subplots(len(datasets), len(TSNE_VARIANTS))
    cmap = __import__("matplotlib").colormaps["tab10"]
    for i, d in enumerate(datasets):
        names = _class_names(ctx, d)
        for j, v in enumerate(TSNE_VARIANTS):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_ours_title(ctx, d)}: {VARIANT_TITLES[v].split(' (')[0]}", fontsize=10)
            lat = _test_latents(ctx, d, v, ctx.settings.tsne_points)
            if lat is None:
                ax.text(0.5, 0.5, "no checkpoint yet", ha="center", va="center", transform=ax.transAxes)
                continue
            z, y, _ = lat
            key = ("tsne", ctx.src(d), v, len(z))
            if key not in ctx.cache:
                ctx.cache[key] = tsne(z, random_state=ctx.settings.random_state)
            xy = ctx.cache[key]
            for c in range(len(names)):
                sel = y == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(c % 10), label=names[c],
                           rasterized=True, linewidths=0)
        handles = [__import__("matplotlib").lines.Line2D([], [], marker="o", ls="", color=cmap(c % 10),
                                                          label=names[c]) for c in range(len(names))]
        axes[i, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5),
                           fontsize=8, frameon=False)
    fig.suptitle(f"t-SNE of {ctx.settings.tsne_points:,} test-set latent means (openTSNE, "
                 f"perplexity 30, random_state {ctx.settings.random_state}), coloured by class")
    return _save(fig, path)


def fig_class_rows(ctx: Context, dataset: str, path: Path) -> bool:
    from .sampling import class_rows

    models = {v: ctx.model(dataset, v) for v in ("cvae", "lambda_hot")}
    if not any(models.values()):
        return False
    names = _class_names(ctx, dataset)
    n = ctx.settings.n_samples
    fig = _new_figure(2 + 2 * 0.55 * n, 0.42 * len(names) + 0.9)
    axes = fig.subplots(1, 2)
    for ax, (v, model) in zip(axes, models.items()):
        title = {"cvae": "CVAE: decode [z, onehot(c)], z ~ N(0, I)",
                 "lambda_hot": "lambda-hot: z ~ N(lambda e_c, I)"}[v]
        if model is None:
            ax.axis("off")
            ax.set_title(f"{title}\n(no checkpoint yet)", fontsize=10)
            continue
        rows = class_rows(model, n, seed=ctx.settings.random_state)
        _show(ax, rows, title, row_labels=list(names) if ax is axes[0] else None)
    fig.suptitle(f"{_ours_title(ctx, dataset)}: {n} samples per class (rows), seed "
                 f"{ctx.settings.random_state}")
    return _save(fig, path)


def fig_kmeans_centres(ctx: Context, path: Path) -> bool:
    from .embeddings import batched
    from .sampling import centre_samples, model_centres

    datasets = ("fashion_mnist", "mnist")   # the paper's Figure 6: Fashion left, MNIST right
    models = {d: ctx.model(d, "kmeans") for d in datasets}
    if not any(models.values()):
        return False
    n = ctx.settings.n_samples
    fig = _new_figure(2 * (2.6 + 0.55 * n), 0.42 * 10 + 1.2)
    axes = fig.subplots(1, 2)
    for ax, d in zip(axes, datasets):
        model = models[d]
        if model is None:
            ax.axis("off")
            ax.set_title(f"{_ours_title(ctx, d)} (no checkpoint yet)", fontsize=10)
            continue
        centres = model_centres(model)
        rows = centre_samples(model, centres, n, std=1.0, seed=ctx.settings.random_state)
        labels = [f"{k}" for k in range(len(centres))]
        data = ctx.data(ctx.src(d))
        if data is not None:
            cl = batched(model.predict_cluster, data.x_test, 4096).numpy()
            y = data.y_test.numpy()
            names = data.class_names
            labels = []
            for k in range(len(centres)):
                ys = y[cl == k]
                if len(ys) == 0:
                    labels.append(f"k={k}: empty")
                    continue
                top = np.bincount(ys, minlength=len(names)).argmax()
                labels.append(f"k={k}: {names[top]} ({100 * (ys == top).mean():.0f}%, n={len(ys)})")
        _show(ax, rows, f"{_ours_title(ctx, d)}: z = c_k + eps, eps ~ N(0, I)", row_labels=labels)
    fig.suptitle("k-means prior VAE: samples around each cluster centre (rows); labels: the "
                 "cluster's majority test class, its share and size")
    return _save(fig, path)


RECON_VARIANTS = ("vae", "beta_vae", "cvae", "lambda_hot", "kmeans")


def fig_reconstructions(ctx: Context, path: Path) -> bool:
    import torch

    datasets = ("fashion_mnist", "mnist")
    if not any(ctx.ckpt(d, v) for d in datasets for v in RECON_VARIANTS):
        return False
    fig = _new_figure(14, 0.62 * (len(RECON_VARIANTS) + 1) + 0.8)
    axes = fig.subplots(1, 2)
    for ax, d in zip(axes, datasets):
        data = ctx.data(ctx.src(d))
        if data is None or not any(ctx.ckpt(d, v) for v in RECON_VARIANTS):
            ax.axis("off")
            ax.set_title(f"{_ours_title(ctx, d)} (no checkpoints yet)", fontsize=10)
            continue
        # The first test image of each class, so every class shows once.
        idx = [int((data.y_test == c).nonzero()[0]) for c in range(data.n_classes)]
        x, y = data.x_test[idx], data.y_test[idx]
        rows, labels = [x], ["original"]
        for v in RECON_VARIANTS:
            model = ctx.model(d, v)
            labels.append(VARIANT_TITLES[v].split(" (")[0])
            if model is None:
                rows.append(torch.full_like(x, 0.5))
                labels[-1] += " (missing)"
                continue
            with torch.no_grad():
                model.eval()
                rows.append(model.reconstruct(x, y if model.conditional else None).cpu())
        _show(ax, torch.stack(rows), _ours_title(ctx, d), row_labels=labels)
    fig.suptitle("Test images (top row) and their reconstructions (decoded posterior means)")
    return _save(fig, path)


def fig_sweep(runs: list[dict], path: Path) -> bool:
    if not runs:
        return False
    fig = _new_figure(15, 4.2)
    axes = fig.subplots(1, 3)
    style = {"lambda_hot": ("lambda-hot", "tab:blue", "o"), "branched": ("branched", "tab:orange", "s")}
    panels = [("test_recon", "recon BCE per test image (lower is better)", 1, None),
              ("acc", "accuracy (%)", 100, None), ("kmeans_nmi", "k-means NMI on latents (%)", 100, None)]
    for ax, (key, ylabel, scale, _) in zip(axes, panels):
        for v, (label, colour, marker) in style.items():
            sel = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["lam"])
            if not sel:
                continue
            lam = [r["lam"] for r in sel]
            if key == "acc":
                ax.plot(lam, [scale * r["metrics"].get("acc_own", np.nan) for r in sel], marker=marker,
                        color=colour, label=f"{label}: own classifier")
                ax.plot(lam, [scale * r["metrics"].get("acc_knn", np.nan) for r in sel], marker=marker,
                        color=colour, ls="--", mfc="white", label=f"{label}: kNN on latents")
            else:
                ax.plot(lam, [scale * r["metrics"].get(key, np.nan) for r in sel], marker=marker,
                        color=colour, label=label)
        ax.set_xscale("symlog", linthresh=1.0)
        lams = sorted({r["lam"] for r in runs})
        ax.set_xticks(lams, [f"{x:g}" for x in lams])
        ax.set_xlabel("lambda")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ds = runs[0]["dataset"]
    if ds == "mnist":  # the paper's lambda-hot numbers are MNIST's
        axes[0].plot([5], [PAPER_RECON["mnist"]["lambda_hot"]], "*", color="black", ms=11,
                     label="lambda-hot paper (lambda = 5)")
        axes[1].plot([5], [PAPER_ARGMAX["mnist"]], "*", color="black", ms=11,
                     label="lambda-hot paper: argmax")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    axes[2].legend(fontsize=8)
    n_train = runs[0].get("n_train")
    fig.suptitle(f"lambda sweep on {TITLES.get(ds, ds)}" + (f" ({n_train:,} training images)" if n_train else "")
                 + f", {runs[0]['epochs']} epochs, seed {runs[0]['seed']}; the paper's stars: full "
                 "training set, its (unstated) epochs")
    return _save(fig, path)


def fig_tree(ctx: Context, dataset: str, path: Path) -> bool:
    from .tree import sample_nodes, tree_table

    model = ctx.model(dataset, "treevae")
    data = ctx.data(ctx.src(dataset))
    if model is None or data is None:
        return False
    table = {r["id"]: r for r in tree_table(model, data.x_test, data.y_test)}
    t = model.tree
    leaves = t.leaves
    xpos = {leaf: float(i) for i, leaf in enumerate(leaves)}
    for n in reversed(t.preorder()):               # children before parents
        if n not in xpos:
            xpos[n] = float(np.mean([xpos[c] for c in t[n].children]))
    n_show = max(4, ctx.settings.n_samples // 2 * 2)
    samples = sample_nodes(model, n_show, seed=ctx.settings.random_state)
    names = data.class_names
    fig = _new_figure(max(8.0, 1.6 * len(leaves)), 3.0 + 0.9 * t.depth)
    grid = fig.add_gridspec(2, len(leaves), height_ratios=[1.2 + 0.5 * t.depth, 2.2])
    ax = fig.add_subplot(grid[0, :])
    for n in t.preorder():
        for c in t[n].children:
            ax.plot([xpos[n], xpos[c]], [-t[n].depth, -t[c].depth], color="0.5", lw=1.2, zorder=1)
    def majority(n: int) -> str:
        counts = np.asarray(table[n]["class_counts"])
        if not counts.sum():
            return "empty"
        top = int(counts.argmax())
        return f"{names[top]}: {100 * counts[top] / counts.sum():.0f}%"

    for n in t.preorder():
        ax.scatter([xpos[n]], [-t[n].depth], s=40, color="0.3", zorder=2)
        if not t[n].is_leaf:
            ax.text(xpos[n] + 0.08, -t[n].depth + 0.08, f"n={table[n]['n_samples']}\n{majority(n)}",
                    fontsize=7, color="0.25", va="bottom")
    for i, leaf in enumerate(leaves):              # the panels below, in the same order
        ax.text(xpos[leaf], -t[leaf].depth - 0.12, f"leaf {i}", ha="center", va="top",
                fontsize=7, color="0.25")
    ax.set_xlim(-0.5, len(leaves) - 0.5)
    ax.set_ylim(-t.depth - 0.4, 0.6)
    ax.axis("off")
    for i, leaf in enumerate(leaves):
        a = fig.add_subplot(grid[1, i])
        imgs = samples[leaf]
        _show(a, imgs.reshape(n_show // 2, 2, *imgs.shape[1:]))
        a.set_title(f"leaf {i}, n={table[leaf]['n_samples']}\n{majority(leaf)}", fontsize=8)
    fig.suptitle(f"TreeVAE on {_ours_title(ctx, dataset)}: test images routed to each node (n, "
                 "majority class and its share);\nbelow each leaf, images generated down the "
                 "path to it", fontsize=10)
    return _save(fig, path)


def section_figures(ctx: Context) -> str:
    parts = ["## 7. Figures", ""]
    items = [("latent_tsne.png", "t-SNE of the latent means: VAE, beta-VAE, lambda-hot, k-means prior "
              "(the paper's Figures 2 and 3)", lambda p: fig_tsne(ctx, p))]
    for d in ("mnist", "fashion_mnist"):
        items.append((f"class_samples_{ctx.src(d)}.png",
                      f"{TITLES[d]}: class-conditional samples, CVAE (left) vs lambda-hot (right) "
                      f"(the paper's Figure {4 if d == 'mnist' else 5})",
                      lambda p, d=d: fig_class_rows(ctx, d, p)))
    items.append(("kmeans_centres.png", "k-means prior VAE: samples around each cluster centre, "
                  "Fashion-MNIST (left) and MNIST (right) (the paper's Figure 6)",
                  lambda p: fig_kmeans_centres(ctx, p)))
    items.append(("reconstructions.png", "Reconstructions of one test image per class, every "
                  "variant of Table 1 (the paper's Figure 7 shows the k-means VAE's)",
                  lambda p: fig_reconstructions(ctx, p)))
    seen = set()
    for name, caption, draw in items:
        if name in seen:     # quick mode: MNIST and Fashion both come from digits
            continue
        seen.add(name)
        if _figure(ctx, name, draw):
            parts += [f"**{caption}.**", "", ctx.figure_link(name, caption), ""]
        else:
            parts += [f"**{caption}**: not drawn, its checkpoints are missing.", ""]
    return "\n".join(parts)


def section_missing(ctx: Context) -> str:
    from .zoo import RECIPES

    wanted = {(r.dataset, r.variant): r for r in RECIPES}
    keys = sorted(set(ctx.missing), key=lambda k: (k[0], k[1]))
    if not keys:
        return ""
    lines = ["## Missing checkpoints", "",
             f"These rows are {MISSING} above because `{ctx.shipped.folder}` has no checkpoint for "
             "them (\"training\" where an unfinished `.partial.safetensors` is there). They fill "
             "in when the report is regenerated after they land; the command that makes each:", ""]
    for k in keys:
        r = wanted.get(k)
        state = "being trained now" if k in ctx.shipped.in_progress else "not present"
        how = f"`{r.command()}`" if r else ("TreeVAE's own recipe (see docs/TREEVAE.md)"
                                            if k[1] == "treevae" else "no recipe in latentviz.zoo")
        lines.append(f"- {TITLES.get(k[0], k[0])} {VARIANT_TITLES.get(k[1], k[1])}: {state}; {how}")
    return "\n".join(lines)


def section_checkpoints(ctx: Context) -> str:
    rows = []
    for (d, v), c in sorted(ctx.shipped.found.items()):
        made = c.meta.get("made") or {}
        rows.append([f"`{c.path.name}`", v, d, c.epochs, (c.meta.get("train_config") or {}).get("seed"),
                     made.get("device", MISSING), _num(made.get("seconds"), 0),
                     c.meta.get("weights_dtype", MISSING), f"`{made.get('command') or MISSING}`"])
    return "\n".join([
        "## Checkpoints read", "",
        f"Every checkpoint in `{ctx.shipped.folder}` at the time of the report, with how it was "
        "made (from its metadata; `seconds` is wall time, training and evaluation, on a shared "
        "machine).", "",
        md_table(["File", "Variant", "Dataset", "Epochs", "Seed", "Device", "Seconds", "Weights",
                  "Command"], rows) if rows else "None.",
    ])


def build_report(checkpoints_dir: Path, out: Path, settings: Settings | None = None, *,
                 data_dir: str | None = None, command: str = "python -m latentviz report") -> Path:
    """Write ``<out>/RESULTS.md`` and ``<out>/figures/*.png``; return the markdown's path."""
    import torch

    settings = settings or Settings.full()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = Context(settings, Shipped.scan(checkpoints_dir), out, data_dir,
                  load_extra(out / EXTRA_RUNS_FILE))
    sections = []
    for make in (section_recon, section_argmax, section_branched, section_tree, section_sweep,
                 section_seeds, section_figures):
        t = time.perf_counter()
        sections.append(make(ctx))
        log.info("%s in %.1fs", make.__name__, time.perf_counter() - t)
    sections += [section_missing(ctx), section_checkpoints(ctx)]
    mode = (" Quick mode: every number comes from tiny models on the 8x8 digits (a test of the "
            "report, not a result).") if settings.quick else ""
    header = [
        "# Results: our numbers beside the papers'", "",
        f"> Regenerated by `{command}` on {_now()} ({platform.node()}, torch {torch.__version__}); "
        "do not edit by hand: change `latentviz/report.py` and run the command again." + mode, "",
        "Every table puts the paper's number next to ours and says how ours were made. Common "
        "to all of ours unless a section says otherwise: grey-level images in [0, 1] (no "
        "binarisation), Bernoulli decoder, BCE summed over the pixels of each image and averaged "
        "over the test set, the shipped checkpoints in `checkpoints/` (recipes in "
        "`latentviz/zoo.py`), metrics as stored in each checkpoint when it was trained (float32 "
        "weights; the shipped float16 copy is checked to score within 0.05 BCE of it).", "",
        "Sections: [1 reconstruction](#1-reconstruction-bce-per-test-image-lambda-hot-paper-table-1) · "
        "[2 argmax accuracy](#2-lambda-hot-argmax-accuracy-lambda-hot-paper-sec-51) · "
        "[3 branched VAE](#3-branched-vae-vs-vae-classifiers-and-clustering-on-the-latents-branched-vae-paper) · "
        "[4 TreeVAE](#4-treevae-hierarchical-clustering-treevae-paper-table-1) · "
        "[5 lambda sweep](#5-lambda-sweep-reconstruction-vs-accuracy-vs-clustering) · "
        "[6 seeds](#6-spread-over-seeds) · [7 figures](#7-figures)",
    ]
    text = "\n\n".join(["\n".join(header)] + [s for s in sections if s]) + "\n"
    path = out / RESULTS_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    log.info("report written in %.1fs", time.perf_counter() - t0)
    return path


def quick_recipes():
    """Tiny digits versions of the shipped recipes (``--retrain --quick``)."""
    from .zoo import CORE, Recipe

    return [Recipe(v, "digits", 2, model={"latent_dim": 12, "hidden": 64}, batch_size=64) for v in CORE]


def main(args) -> int:
    """The ``report`` subcommand (see the module docstring)."""
    settings = Settings.quick_mode() if args.quick else Settings.full()
    out, folder = Path(args.out), Path(args.checkpoints)
    runs_dir = Path(getattr(args, "runs_dir", None) or DEFAULT_RUNS_DIR)
    flags = [f for f, on in (("--quick", args.quick), ("--retrain", args.retrain)) if on]
    if str(args.checkpoints) != "checkpoints":
        flags.append(f"--checkpoints {args.checkpoints}")
    if str(args.out) != "docs":
        flags.append(f"--out {args.out}")
    if args.data_dir:
        flags.append(f"--data-dir {args.data_dir}")
    command = " ".join(["python -m latentviz report", *flags])
    if args.retrain:
        from .zoo import make_all

        make_all(folder, args.data_dir, skip_existing=False,
                 recipes=quick_recipes() if args.quick else None)
        run_extra(settings, out / EXTRA_RUNS_FILE, runs_dir, args.data_dir, generated_by=command)
    path = build_report(folder, out, settings, data_dir=args.data_dir, command=command)
    print(path)
    return 0
