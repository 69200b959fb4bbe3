"""The decoded map: images decoded at places on a 2-D map of latent space.

Kingma & Welling (2014, Auto-Encoding Variational Bayes, Fig. 4) decode a grid over a 2-D
latent space, x = sigmoid(f_theta(z)). For any latent size the grid lives on the map
instead: z = P^{-1}(p) for places p on the map, through the projection's inverse
(:meth:`latentviz.projections.Projector.inverse_transform`: exact for PCA, umap-learn's
for UMAP, an approximation from the nearest fitted points for t-SNE, which has none;
``DecodedGrid.label`` says which). Every decode is one batched call of the model's decoder.

- :func:`grid_over`: n x n places tiling the map's bounding box (cell centres).
- :func:`decoded_grid`: the images at those places, (n, n, C, H, W), row 0 at the top.
- :func:`decode_at`: images at any places (the centre of a box), with the nearest real
  points; :func:`decoded_path`: images along the straight segment between two places.

A conditional model (CVAE) decodes a class too: ``y`` (one class, or one per place), or
else the most common of ``labels`` (the fitted points' classes) among the nearest points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from .models.base import LatentModel
from .projections import Projector
from .sampling import decode


@dataclass
class Grid:
    """Cell centres of an n_rows x n_cols grid: columns left to right, rows top to bottom
    (``ys`` descending, as an image is drawn), tiling ``extent`` = (x0, x1, y0, y1)."""

    xs: np.ndarray      # (n_cols,)
    ys: np.ndarray      # (n_rows,) descending
    extent: tuple[float, float, float, float]

    @property
    def points(self) -> np.ndarray:
        """(n_rows * n_cols, 2): row-major from the top-left cell."""
        gx, gy = np.meshgrid(self.xs, self.ys)
        return np.stack([gx.ravel(), gy.ravel()], axis=1)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)


def grid_over(embedding: np.ndarray, n: int = 8, *,
              extent: tuple[float, float, float, float] | None = None) -> Grid:
    """An n x n grid over ``extent`` (x0, x1, y0, y1), by default the bounding box of the
    map ``embedding`` (N, 2); each cell's centre is where it is decoded."""
    if not 1 <= int(n) <= 64:
        raise ValueError(f"n (grid cells per side) must be between 1 and 64, not {n}")
    n = int(n)
    if extent is None:
        e = np.asarray(embedding, dtype=np.float64)[:, :2]
        (x0, y0), (x1, y1) = e.min(0), e.max(0)
    else:
        x0, x1, y0, y1 = (float(v) for v in extent)
    if not (np.isfinite([x0, x1, y0, y1]).all() and x1 >= x0 and y1 >= y0):
        raise ValueError(f"extent must be finite with x0 <= x1 and y0 <= y1, got "
                         f"{(x0, x1, y0, y1)}")
    xs = x0 + (np.arange(n) + 0.5) * (x1 - x0) / n
    ys = y1 - (np.arange(n) + 0.5) * (y1 - y0) / n
    return Grid(xs, ys, (float(x0), float(x1), float(y0), float(y1)))


@dataclass
class Decoded:
    """Images decoded at places on a map, with what they came from."""

    images: Tensor          # (M, C, H, W) in [0, 1]
    points: np.ndarray      # (M, 2) places on the map
    z: np.ndarray           # (M, D) latents they were decoded from
    nearest: np.ndarray     # (M, k) rows of the map's fitted points, nearest first
    nearest_dist: np.ndarray  # (M, k) their distances on the map
    label: str              # how the map was inverted (exact / approximate)
    exact: bool
    y: np.ndarray | None = None   # (M,) the class decoded with (conditional models)


@dataclass
class DecodedGrid:
    """:func:`decoded_grid`'s result: ``images`` (n_rows, n_cols, C, H, W), row 0 the top
    of the map, at the centres of ``grid``'s cells."""

    images: Tensor
    grid: Grid
    z: np.ndarray           # (n_rows * n_cols, D)
    method: str
    label: str
    exact: bool
    y: np.ndarray | None = None


def _classes(model: LatentModel, proj: Projector, points: np.ndarray, y, labels,
             k: int) -> np.ndarray | None:
    if not model.conditional:
        return None
    m = len(points)
    if y is not None:
        return np.broadcast_to(np.asarray(y, dtype=np.int64).reshape(-1), (m,)).copy()
    if labels is None:
        raise ValueError("a conditional model decodes a class too: pass y (the class) or "
                         "labels (the map's points' classes, for the most common nearby)")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(proj.embedding):
        raise ValueError(f"labels has {len(labels)} entries for a map of "
                         f"{len(proj.embedding)} points")
    _, idx = proj.neighbours(points, k)
    near = labels[idx]                                              # (M, k)
    counts = np.stack([(near == c).sum(1) for c in range(int(labels.max()) + 1)], axis=1)
    return counts.argmax(1)     # ties: the smaller class, deterministically


def decode_at(model: LatentModel, proj: Projector, points_2d, *, k_nearest: int = 8,
              y=None, labels=None, k: int = 10) -> Decoded:
    """Decode places on the map ``points_2d`` (M, 2) -> :class:`Decoded`: the images,
    their latents (``proj.inverse_transform``, ``k`` neighbours for t-SNE), and the
    ``k_nearest`` fitted points nearest each place (rows of ``proj.embedding``; the test
    ids are ``ids[nearest]`` for the ids the map was fitted on)."""
    p = np.asarray(points_2d, dtype=np.float64).reshape(-1, proj.embedding.shape[1])
    z = proj.inverse_transform(p, k=k)                              # (M, D)
    dist, idx = proj.neighbours(p, k_nearest)
    cls = _classes(model, proj, p, y, labels, max(k, k_nearest))
    images = decode(model, z, cls)
    return Decoded(images, p, z, idx, dist, proj.inverse_label, proj.inverse_exact, cls)


def decoded_path(model: LatentModel, proj: Projector, p0, p1, steps: int = 8, *,
                 k_nearest: int = 1, y=None, labels=None, k: int = 10) -> Decoded:
    """Decode ``steps`` evenly spaced places on the straight segment from ``p0`` to ``p1``
    on the map (not in latent space: the path the eye follows) -> :class:`Decoded`."""
    if not 2 <= int(steps) <= 256:
        raise ValueError(f"steps must be between 2 and 256, not {steps}")
    a, b = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    t = np.linspace(0.0, 1.0, int(steps))[:, None]
    return decode_at(model, proj, (1 - t) * a + t * b, k_nearest=k_nearest, y=y,
                     labels=labels, k=k)


def decoded_grid(model: LatentModel, proj: Projector, n: int = 8, *,
                 extent: tuple[float, float, float, float] | None = None, y=None,
                 labels=None, k: int = 10) -> DecodedGrid:
    """Decode an n x n grid over the map (:func:`grid_over`) in one batch ->
    :class:`DecodedGrid` with images (n, n, C, H, W), row 0 at the top of the map."""
    grid = grid_over(proj.embedding, n, extent=extent)
    p = grid.points
    z = proj.inverse_transform(p, k=k)
    cls = _classes(model, proj, p, y, labels, k)
    images = decode(model, z, cls)
    rows, cols = grid.shape
    return DecodedGrid(images.reshape(rows, cols, *images.shape[1:]), grid, z, proj.method,
                       proj.inverse_label, proj.inverse_exact, cls)
