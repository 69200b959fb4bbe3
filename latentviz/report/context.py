"""What the sections share: the checkpoints read (:class:`Shipped`), the loaded data and
models (:class:`Context`), our protocol line, the test latents."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .papers import MISSING, TITLES
from .settings import FIGURES_DIR, Settings

log = logging.getLogger(__name__)


@dataclass
class Shipped:
    """The checkpoints the report reads, by (dataset, variant), and what is missing."""

    folder: Path
    found: dict = field(default_factory=dict)      # (dataset, variant) -> Checkpoint
    in_progress: set = field(default_factory=set)  # (dataset, variant) with a .partial file
    named: dict = field(default_factory=dict)      # file stem -> Checkpoint (finished ones)

    @classmethod
    def scan(cls, folder: Path) -> "Shipped":
        from ..checkpoints import list_checkpoints

        out = cls(Path(folder))
        for c in list_checkpoints(folder, partial=True):
            if c.error:
                log.warning("skipping %s: %s", c.path, c.error)
                continue
            key = (c.dataset, c.variant)
            if c.path.name.endswith(".partial.safetensors"):
                out.in_progress.add(key)
                continue
            out.named[c.path.name.removesuffix(".safetensors")] = c
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
        from ..data import DatasetError, load_dataset

        if name not in self._data:
            try:
                self._data[name] = load_dataset(name, self.data_dir)
            except DatasetError as exc:
                log.warning("cannot load %s: %s", name, exc)
                self._data[name] = None
        return self._data[name]

    def model(self, dataset: str, variant: str):
        from ..checkpoints import load

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


def _test_latents(ctx: Context, dataset: str, variant: str, n: int | None = None):
    """Posterior means and labels of (a seeded subset of) the test set, or None."""
    from ..embeddings import encode_means
    from ..projections import sample_indices

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
