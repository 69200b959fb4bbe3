"""Cached loaders: every expensive thing the pages need, computed once per key.

Keys are hashable and name what the result depends on: a checkpoint's path *and* mtime
(a retrained file gets a new key), the method, sample size and seed of a projection.
``st.cache_resource`` holds objects (models, datasets, fitted projections: shared, not
copied); ``st.cache_data`` holds arrays (copied per caller, so a page cannot corrupt them).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import streamlit as st

from .. import checkpoints, projections, sampling
from ..data import Dataset, dataset_for, load_dataset
from ..embeddings import encode_split
from ..models.base import LatentModel
from ..train import pick_device
from .state import Entry, checkpoint_files

log = logging.getLogger(__name__)


@st.cache_resource
def device_name() -> str:
    """What the sidebar shows: the GPU's name, or CPU with its thread count."""
    import torch

    dev = pick_device("auto")
    if dev.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


@st.cache_data(show_spinner=False, max_entries=512)
def _entry(path: str, mtime: float, source: str) -> Entry:
    try:
        return Entry(path, mtime, source, checkpoints.read_meta(path).meta)
    except checkpoints.CheckpointError as exc:
        return Entry(path, mtime, source, {}, str(exc))


def entries() -> list[Entry]:
    """Every checkpoint in the shipped and the user's folder (headers cached by mtime)."""
    return [_entry(p, m, s) for p, m, s in checkpoint_files()]


def usable() -> list[Entry]:
    return [e for e in entries() if e.error is None]


@st.cache_resource(max_entries=12, show_spinner="Loading the model")
def _model(path: str, mtime: float) -> tuple[LatentModel, checkpoints.Checkpoint]:
    model, ckpt = checkpoints.load(path, device=pick_device("auto"))
    model.eval()
    return model, ckpt


def model(entry: Entry) -> LatentModel:
    """The checkpoint's model in eval mode (raises CheckpointError for a bad file)."""
    return _model(entry.path, entry.mtime)[0]


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset")
def dataset(name: str, image_size: int | None = None) -> Dataset:
    """A dataset by name or path on the CPU (raises DatasetError / ConfigError with a
    clear text)."""
    return load_dataset(name, image_size=image_size)


@st.cache_resource(max_entries=4, show_spinner="Opening the checkpoint's dataset")
def _own_dataset(source: str) -> Dataset:
    return dataset_for({"dataset_source": json.loads(source)})


def checkpoint_dataset(meta: dict) -> Dataset:
    """The dataset a checkpoint was trained on: by name, or its own images reopened from
    their path and checked to be unchanged (DatasetError says when moved or changed)."""
    src = meta.get("dataset_source")
    if src:
        return _own_dataset(json.dumps(src, sort_keys=True))
    return dataset(meta.get("dataset", "?"))


@st.cache_data(max_entries=32, show_spinner="Encoding the test set")
def encoded(path: str, mtime: float) -> dict[str, np.ndarray | None]:
    """The test set's latent means and labels: z (N, D), y, predicted, cluster, leaf.

    ``leaf`` is a TreeVAE's leaf node id per image (None for other variants)."""
    m, ckpt = _model(path, mtime)
    data = checkpoint_dataset(ckpt.meta)
    enc = encode_split(m, data.x_test, data.y_test)
    leaf = None
    if getattr(m, "tree", None) is not None and enc.cluster is not None:
        leaf = np.asarray(m.tree.leaves, dtype=np.int64)[enc.cluster]
    return {"z": enc.z, "y": enc.y, "predicted": enc.predicted, "cluster": enc.cluster,
            "leaf": leaf}


def encoded_for(entry: Entry) -> dict[str, np.ndarray | None]:
    return encoded(entry.path, entry.mtime)


@st.cache_data(max_entries=32, show_spinner="k-means on the latent means")
def latent_kmeans(path: str, mtime: float, k: int, seed: int) -> sampling.LatentClusters:
    """k-means (k clusters, seeded) on the whole test set's latent means."""
    return sampling.latent_clusters(encoded(path, mtime)["z"], k, random_state=seed)


@st.cache_resource(max_entries=24, show_spinner=False)
def _projection(path: str, mtime: float, method: str, n: int, seed: int
                ) -> tuple[np.ndarray, projections.Projector]:
    from .. import mapcache

    z = encoded(path, mtime)["z"]
    # The map comes from the shipped file, the disk cache or a fit (then stored on disk;
    # mapcache). The bar lives inside the cached function so that a cache hit replays
    # nothing that points outside it (Streamlit forbids that); it appears only when a
    # fit reports progress and is emptied when done.
    bar = []

    def progress(f: float, msg: str) -> None:
        if not bar:
            bar.append(st.progress(0.0, text=msg))
        bar[0].progress(min(max(f, 0.0), 1.0), text=msg)

    ids, proj = mapcache.projection(path, z, method, n, seed, progress=progress)
    if bar:
        bar[0].empty()
    return ids, proj


def projection(entry: Entry, method: str, n: int, seed: int
               ) -> tuple[np.ndarray, projections.Projector]:
    """(ids of the sampled test images, fitted projector) for a checkpoint's test set;
    ``proj.source`` says whether the map was "shipped", read from the disk "cache" or
    "computed" now."""
    return _projection(entry.path, entry.mtime, method, int(n), int(seed))


@st.cache_resource(max_entries=1, show_spinner=False)
def png_export_available() -> str | None:
    """None if kaleido can render a PNG here (it needs a Chrome/Chromium), else why not."""
    import plotly.graph_objects as go

    from ..figures import figure_png
    try:
        figure_png(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), width=100, height=100)
        return None
    except RuntimeError as exc:
        log.warning("PNG export unavailable: %s", exc)
        return str(exc)


def entry_for(path: str | Path) -> Entry | None:
    path = str(path)
    return next((e for e in entries() if e.path == path), None)


# ----------------------------------------------------------------------------- TreeVAE

@st.cache_data(max_entries=16, show_spinner="Routing the test set down the tree")
def tree_table(path: str, mtime: float) -> list[dict]:
    """``latentviz.tree.tree_table`` over the test set (one dict per node)."""
    from .. import tree

    m, ckpt = _model(path, mtime)
    data = checkpoint_dataset(ckpt.meta)
    return tree.tree_table(m, data.x_test, data.y_test, data.n_classes)


@st.cache_data(max_entries=16, show_spinner="Scoring the tree")
def tree_metrics(path: str, mtime: float) -> dict:
    """dp, lp, leaf_acc, leaf_nmi: the checkpoint's stored values, else computed."""
    m, ckpt = _model(path, mtime)
    stored = ckpt.metrics  # floats; a metric stored as null reads as NaN
    if all(k in stored for k in ("dp", "lp", "leaf_acc", "leaf_nmi")):
        return dict(stored)
    return {**stored, **m.extra_metrics(checkpoint_dataset(ckpt.meta))}


@st.cache_resource(max_entries=16, show_spinner="Sampling every node")
def node_samples(path: str, mtime: float, n: int, seed: int) -> dict:
    """``latentviz.tree.sample_nodes``: {node id: images (n, C, H, W)}."""
    from .. import tree

    return tree.sample_nodes(_model(path, mtime)[0], n, seed)


@st.cache_data(max_entries=64, show_spinner=False)
def node_mask(path: str, mtime: float, node: int) -> np.ndarray:
    """Which test images are routed through ``node`` (bool per test image)."""
    from .. import tree

    m, ckpt = _model(path, mtime)
    return tree.node_mask(m, checkpoint_dataset(ckpt.meta).x_test, node)


@st.cache_data(max_entries=32, show_spinner="Measuring each latent dimension")
def latent_activity(path: str, mtime: float):
    """``metrics.latent_activity`` on the test set: A_u and KL_u per latent dimension."""
    from ..metrics import latent_activity as activity

    m, ckpt = _model(path, mtime)
    data = dataset(ckpt.dataset)
    return activity(m, data.x_test, data.y_test)


@st.cache_data(max_entries=32, show_spinner="Reconstructing the test set")
def test_recon_errors(path: str, mtime: float) -> np.ndarray:
    """``metrics.recon_errors`` of every test image (what an upload is compared with)."""
    from ..metrics import recon_errors

    m, ckpt = _model(path, mtime)
    data = dataset(ckpt.dataset)
    return recon_errors(m, data.x_test, data.y_test)


# ----------------------------------------------------------------------------- VAE + Ward baseline

def baseline_vae(entry: Entry) -> Entry | None:
    """A plain VAE checkpoint on the same test images as ``entry`` (same dataset, image
    shape and, for your own images, the same source): the shipped one first."""
    def images(e: Entry):
        return (e.dataset, json.dumps(e.meta.get("dataset_source"), sort_keys=True),
                (e.meta.get("config") or {}).get("image_shape"))

    same = [e for e in usable() if e.variant == "vae" and images(e) == images(entry)]
    same.sort(key=lambda e: (e.source != "shipped", e.name != f"{e.dataset}-vae", e.name))
    return same[0] if same else None


@st.cache_data(max_entries=16, show_spinner="Ward clustering of the VAE's test latents")
def ward_baseline(path: str, mtime: float, n_leaves: int) -> dict[str, float]:
    """VAE + Agg (``tree.agglomerative_scores``): Ward on a checkpoint's test-set latent
    means, the merge tree cut to ``n_leaves``: dp, lp, acc, nmi, ari."""
    from .. import tree

    enc = encoded(path, mtime)
    k = int(n_leaves)
    return tree.agglomerative_scores(enc["z"], enc["y"], (k,), full_tree=False)[k]
