"""Shared fixtures: tiny data and tiny trained checkpoints, built once per session.

MNIST and Fashion-MNIST come from ../shared/data (read-only, torchvision's layout): the
.gz files are copied into a temporary dataset root, as a user's download would leave them.
"""
from __future__ import annotations

import atexit
import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import latentviz as lv
from latentviz.train import train_model

torch.set_num_threads(min(2, torch.get_num_threads()))
# Maps the tests compute go to a throwaway disk cache, never the user's (mapcache).
if "LATENTVIZ_CACHE" not in os.environ:
    os.environ["LATENTVIZ_CACHE"] = tempfile.mkdtemp(prefix="latentviz-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LATENTVIZ_CACHE"], True)

SHARED_DATA = Path(os.environ.get("LATENTVIZ_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))

# Small enough that every variant trains in about a second on two CPU cores.
TINY = {"latent_dim": 12, "hidden": 64}
TINY_TRAIN = lv.TrainConfig(epochs=4, batch_size=64, seed=0)


def tiny_model(variant: str, data: lv.Dataset, **overrides):
    cls = lv.VARIANTS[variant].cls.Config
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in {**TINY, **getattr(cls, "TINY", {}), **overrides}.items() if k in names}
    return lv.build(variant, image_shape=data.image_shape, n_classes=data.n_classes, **values)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A writable dataset root holding copies of the shared MNIST / Fashion-MNIST files."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED_DATA} (set LATENTVIZ_SHARED_DATA)")
    root = tmp_path_factory.mktemp("data")
    for folder in ("MNIST", "FashionMNIST"):
        (root / folder / "raw").mkdir(parents=True)
        for f in (SHARED_DATA / folder / "raw").glob("*.gz"):
            shutil.copy(f, root / folder / "raw" / f.name)
    return root


@pytest.fixture(scope="session")
def digits() -> lv.Dataset:
    return lv.load_dataset("digits")


@pytest.fixture(scope="session")
def mnist(data_root) -> lv.Dataset:
    return lv.load_dataset("mnist", data_root, download=False)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, digits) -> dict[str, Path]:
    """One tiny checkpoint per registered variant, trained on digits: {variant: path}."""
    folder = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name in lv.VARIANTS:
        model = tiny_model(name, digits)
        history = train_model(model, digits, TINY_TRAIN)
        metrics = lv.metrics.evaluate_model(model, digits, classifiers=("logreg",))
        out[name] = lv.save(folder / f"digits-{name}.safetensors", model, dataset="digits",
                            train_config=TINY_TRAIN, history=history, metrics=metrics)
    return out


# Tree metrics straight from their definitions (test_treevae, test_report check against them).
def brute_force_dp(children: dict, leaf_ids, y) -> float:
    """Dendrogram purity straight from the definition: every same-class pair, its LCA."""
    parent = {c: p for p, cs in children.items() for c in cs}

    def ancestors(n):
        out = [n]
        while out[-1] in parent:
            out.append(parent[out[-1]])
        return out

    members = {}  # node -> labels of the samples below it
    for k, leaf in enumerate(leaf_ids):
        for a in ancestors(leaf):
            members.setdefault(a, []).append(y[k])
    scores = []
    for i, j in itertools.combinations(range(len(y)), 2):
        if y[i] == y[j]:
            lca = next(a for a in ancestors(leaf_ids[i]) if a in ancestors(leaf_ids[j]))
            scores.append(np.mean(np.asarray(members[lca]) == y[i]))
    return float(np.mean(scores))


def brute_force_lp(leaf_ids, y) -> float:
    total = 0
    for leaf in set(leaf_ids):
        labels = [y[k] for k in range(len(y)) if leaf_ids[k] == leaf]
        total += max(labels.count(c) for c in set(labels))
    return total / len(y)


@dataclasses.dataclass
class Grid:
    """An image grid of the app (``figures.image_grid``) as a reader sees it."""
    title: str
    rows: list[str]          # row labels, top to bottom
    cols: list[str]          # column labels, left to right
    images: list             # PIL images, row by row
    n_rows: int
    n_cols: int


def read_grid(markup: str) -> Grid:
    """Parse the HTML of ``figures.image_grid`` with the standard library's parser."""
    import base64
    import io
    from html.parser import HTMLParser

    from PIL import Image

    out = Grid("", [], [], [], 0, 0)

    class Reader(HTMLParser):
        part = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            kind = a.get("data-lv")
            if kind == "grid":
                out.n_rows, out.n_cols = int(a["data-rows"]), int(a["data-cols"])
            elif kind == "image":
                png = base64.b64decode(a["src"].split(",", 1)[1])
                out.images.append(Image.open(io.BytesIO(png)))
            self.part = kind if kind in ("title", "row-label", "col-label") else None

        def handle_data(self, data):
            if self.part == "title":
                out.title += data
            elif self.part == "row-label":
                out.rows.append(data)
            elif self.part == "col-label":
                out.cols.append(data)

        def handle_endtag(self, tag):
            self.part = None

    Reader(convert_charrefs=True).feed(markup)
    return out
