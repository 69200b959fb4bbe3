"""Matplotlib helpers of the figures: a figure without pyplot, saving, image mosaics."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .context import Context

log = logging.getLogger(__name__)


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
    from ..figures import tile_rows

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
    from ..data import FASHION_CLASSES, MNIST_CLASSES
    return FASHION_CLASSES if dataset == "fashion_mnist" else MNIST_CLASSES
