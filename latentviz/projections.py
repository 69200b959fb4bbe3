"""2-D maps of latent means: PCA, t-SNE and UMAP, arrays in, arrays out.

The lambda-hot paper (Wang, Blair, Belkhale, sec. 5, Figures 2 and 3) shows t-SNE maps of
test-set latent means; here any of three methods, each a fitted :class:`Projector` whose
``transform`` places new points on an existing map (an uploaded image, for example):

- PCA: scikit-learn's ``PCA`` (exact SVD, deterministic); new points by the linear map.
- t-SNE: openTSNE (Policar et al. 2024), which, unlike scikit-learn's TSNE, can embed new
  points into a fitted map (``TSNEEmbedding.transform``: each new point is optimised
  against the fixed reference embedding only).
- UMAP: umap-learn (McInnes et al. 2018), on exact nearest neighbours from scikit-learn
  (``precomputed_knn``) and 200 optimisation epochs. umap-learn would find approximate
  neighbours with pynndescent, whose numba code cannot be cached and costs about 40 s of
  compilation in every new process on two cores; an exact search over 10,000 latents takes
  under half a second (70,000: about 11 s), and 200 epochs is umap-learn's own choice above
  10,000 points (500 below). New points are placed as umap-learn's ``transform`` starts
  them (``init_graph_transform``): the mean of their k nearest fitted points' coordinates,
  weighted by UMAP's fuzzy membership strengths exp(-(d - rho) / sigma) (sec. 3.1 of the
  UMAP paper); umap-learn then refines that start for a few epochs, which needs
  pynndescent's index and is skipped here.

Parameter names follow scikit-learn (``n_components``, ``random_state``, ``perplexity``,
``n_neighbors``); ``random_state`` is always explicit, so the same call gives the same map.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("pca", "tsne", "umap")
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}

#: progress(fraction in [0, 1], message); called from the fitting thread.
ProgressFn = Callable[[float, str], None]


@dataclass
class Projector:
    """A fitted map from latent space to ``n_components`` dimensions.

    ``embedding`` holds the fitted points' coordinates, row for row; ``params`` the
    parameters actually used (t-SNE's perplexity and UMAP's n_neighbors are capped for
    small samples, see :func:`fit`).
    """

    method: str
    params: dict
    embedding: np.ndarray  # (N, n_components)
    _model: Any = field(repr=False, default=None)

    def transform(self, z: np.ndarray) -> np.ndarray:
        """Coordinates of new latent points on this map -> (M, n_components)."""
        z = _as_2d(z)
        if len(z) == 0:
            return np.zeros((0, self.embedding.shape[1]))
        return np.asarray(self._model.transform(z), dtype=np.float64)


def _as_2d(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"expected latent points of shape (N, D), got {z.shape}")
    return z


def fit(z: np.ndarray, method: str = "pca", *, n_components: int = 2, random_state: int = 0,
        perplexity: float = 30.0, n_neighbors: int = 15, min_dist: float = 0.1,
        progress: ProgressFn | None = None) -> Projector:
    """Fit a projection of ``z`` (N, D) and return it as a :class:`Projector`.

    Parameters
    ----------
    method : "pca", "tsne" or "umap".
    perplexity : t-SNE's effective number of neighbours; capped at (N - 1) / 3, the most
        the neighbour search can support.
    n_neighbors, min_dist : UMAP's; n_neighbors is capped at N - 1.
    progress : called with (fraction, message) while fitting (t-SNE every 50 iterations;
        UMAP after its neighbour search; all at start and end).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    z = _as_2d(z)
    n = len(z)
    if n < 3:
        raise ValueError(f"a projection needs at least 3 points, got {n}")
    report = progress or (lambda f, m: None)
    report(0.0, f"fitting {METHOD_LABELS[method]} on {n} points")
    if method == "pca":
        proj = _fit_pca(z, n_components, random_state)
    elif method == "tsne":
        proj = _fit_tsne(z, n_components, random_state, perplexity, report)
    else:
        proj = _fit_umap(z, n_components, random_state, n_neighbors, min_dist, report)
    report(1.0, f"{METHOD_LABELS[method]} done")
    return proj


def _fit_pca(z, n_components, random_state) -> Projector:
    from sklearn.decomposition import PCA

    k = min(n_components, z.shape[1], len(z))
    pca = PCA(n_components=k, svd_solver="full", random_state=random_state).fit(z)
    ratio = [float(r) for r in pca.explained_variance_ratio_]
    # A latent with fewer dims than asked for still gets a full map (extra axes zero).
    model = pca if k == n_components else _Padded(pca, n_components)
    return Projector("pca", {"n_components": n_components, "random_state": random_state,
                             "explained_variance_ratio": ratio}, model.transform(z), model)


class _Padded:
    def __init__(self, inner, n_components):
        self.inner, self.n_components = inner, n_components

    def transform(self, z):
        out = self.inner.transform(z)
        return np.pad(out, ((0, 0), (0, self.n_components - out.shape[1])))


def _fit_tsne(z, n_components, random_state, perplexity, report) -> Projector:
    from openTSNE import TSNE

    n = len(z)
    used = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    if used != perplexity:
        log.info("t-SNE perplexity %.1f capped at %.1f for %d points", perplexity, used, n)
    early, main = 250, 500  # openTSNE's defaults; its callbacks count each phase from 0
    calls = {"n": 0}

    def on_iter(iteration, error, embedding):
        calls["n"] += 1
        done = min(calls["n"] * 50, early + main)
        report(done / (early + main), f"t-SNE iteration {done} of {early + main}")
        return False  # never interrupt

    tsne = TSNE(n_components=n_components, perplexity=used, random_state=random_state,
                n_jobs=1, early_exaggeration_iter=early, n_iter=main, callbacks=on_iter,
                callbacks_every_iters=50, neighbors="exact" if n < 1000 else "auto",
                verbose=False)
    emb = tsne.fit(z)
    return Projector("tsne", {"n_components": n_components, "random_state": random_state,
                              "perplexity": used}, np.asarray(emb, dtype=np.float64), emb)


def _fit_umap(z, n_components, random_state, n_neighbors, min_dist, report) -> Projector:
    import warnings

    import umap
    from sklearn.neighbors import NearestNeighbors

    n = len(z)
    used = int(min(n_neighbors, n - 1))
    nn = NearestNeighbors(n_neighbors=used, algorithm="brute").fit(z)
    dist, idx = nn.kneighbors(z)                   # each point is its own first neighbour
    report(0.3, f"UMAP: {used} nearest neighbours found, laying out {n} points")
    model = umap.UMAP(n_components=n_components, n_neighbors=used, min_dist=min_dist,
                      random_state=random_state, n_jobs=1, transform_seed=random_state,
                      n_epochs=UMAP_EPOCHS,
                      precomputed_knn=(idx.astype(np.int32), dist.astype(np.float32), None))
    with warnings.catch_warnings():
        # umap warns that a fixed random_state disables parallelism (that is the point) and
        # that without a search index it cannot transform (we do that ourselves).
        warnings.simplefilter("ignore")
        emb = np.asarray(model.fit_transform(z), dtype=np.float64)
    return Projector("umap", {"n_components": n_components, "random_state": random_state,
                              "n_neighbors": used, "min_dist": min_dist,
                              "n_epochs": UMAP_EPOCHS, "neighbours": "exact"},
                     emb, _UMAPPlacer(nn, emb))


#: UMAP's optimisation epochs (umap-learn: 500 up to 10,000 points, 200 above).
UMAP_EPOCHS = 200


class _UMAPPlacer:
    """New points on a fitted UMAP map: the membership-weighted mean of the coordinates of
    their k nearest fitted points (umap-learn's ``transform`` initialisation)."""

    def __init__(self, nn, embedding: np.ndarray):
        self.nn, self.embedding = nn, embedding

    def transform(self, z: np.ndarray) -> np.ndarray:
        from umap.umap_ import smooth_knn_dist

        dist, idx = self.nn.kneighbors(z)
        sigma, rho = smooth_knn_dist(dist.astype(np.float32), float(dist.shape[1]))
        w = np.exp(-np.maximum(dist - rho[:, None], 0.0) / sigma[:, None])   # (M, k), w > 0
        return (w[:, :, None] * self.embedding[idx]).sum(1) / w.sum(1, keepdims=True)


def pca(z, n_components: int = 2, random_state: int = 0) -> np.ndarray:
    """PCA coordinates of z -> (N, n_components)."""
    return fit(z, "pca", n_components=n_components, random_state=random_state).embedding


def tsne(z, n_components: int = 2, perplexity: float = 30.0, random_state: int = 0,
         progress: ProgressFn | None = None) -> np.ndarray:
    """t-SNE coordinates of z (openTSNE) -> (N, n_components)."""
    return fit(z, "tsne", n_components=n_components, perplexity=perplexity,
               random_state=random_state, progress=progress).embedding


def umap(z, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1,
         random_state: int = 0) -> np.ndarray:
    """UMAP coordinates of z -> (N, n_components)."""
    return fit(z, "umap", n_components=n_components, n_neighbors=n_neighbors,
               min_dist=min_dist, random_state=random_state).embedding


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """A sorted, seeded random subset of ``range(n_total)`` of size min(n, n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))
