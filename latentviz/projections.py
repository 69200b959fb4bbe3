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

Back from the map to latent space (:meth:`Projector.inverse_transform`, the decoded map):

- PCA: exact, z = mean + xy W (the linear inverse; exact for points in the span of the
  components, so a 2-D latent comes back whole).
- UMAP: umap-learn's ``inverse_transform`` (the membership-weighted mean of the latents of
  the fitted points around the place on the map's Delaunay graph, refined by SGD on UMAP's
  cross entropy), ported in :mod:`latentviz.umap_inverse` so that it runs from the map and
  the latents alone (a map read back from disk inverts too) and fast: umap-learn's own
  takes 3.5 s per call for 10,000 points.
- t-SNE has no inverse. An approximation: the inverse-distance-weighted mean of the
  latents of the k nearest fitted points on the map (``INVERSE_LABELS`` says so).

:func:`align` rotates, reflects, scales and shifts one map onto another on the points
they share (orthogonal Procrustes), so two maps of one test set can be read side by side.

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


#: How each method's :meth:`Projector.inverse_transform` goes back to latent space.
INVERSE_LABELS = {"pca": "exact (PCA inverse)",
                  "umap": "UMAP inverse_transform (umap-learn's algorithm)",
                  "tsne": "approximate (k-NN mean of latents)"}


@dataclass
class Projector:
    """A fitted map from latent space to ``n_components`` dimensions.

    ``embedding`` holds the fitted points' coordinates, row for row; ``params`` the
    parameters actually used (t-SNE's perplexity and UMAP's n_neighbors are capped for
    small samples, see :func:`fit`). ``z`` holds the fitted latents (what t-SNE and UMAP
    place new points and invert with); ``arrays`` what else the map needs to be rebuilt
    (PCA's ``components`` and ``mean``). ``source`` says where the map came from:
    "computed", or "shipped" / "cache" when :mod:`latentviz.mapcache` read it from disk.
    """

    method: str
    params: dict
    embedding: np.ndarray  # (N, n_components)
    _model: Any = field(repr=False, default=None)
    z: np.ndarray | None = field(repr=False, default=None)     # (N, D)
    arrays: dict = field(repr=False, default_factory=dict)
    source: str = "computed"
    _lazy: dict = field(repr=False, default_factory=dict)

    def transform(self, z: np.ndarray) -> np.ndarray:
        """Coordinates of new latent points on this map -> (M, n_components)."""
        z = _as_2d(z)
        if len(z) == 0:
            return np.zeros((0, self.embedding.shape[1]))
        if self._model is None:
            self._model = _placer(self)
        return np.asarray(self._model.transform(z), dtype=np.float64)

    @property
    def inverse_label(self) -> str:
        """How :meth:`inverse_transform` works for this method (exact or approximate)."""
        return INVERSE_LABELS[self.method]

    @property
    def inverse_exact(self) -> bool:
        return self.method == "pca"

    def inverse_transform(self, xy: np.ndarray, *, k: int = 10) -> np.ndarray:
        """Latent points for places on this map, (M, n_components) -> (M, D).

        PCA: exact linear inverse. UMAP: umap-learn's inverse (see the module doc).
        t-SNE: the inverse-distance-weighted mean of the latents of the ``k`` nearest
        fitted points (an approximation; a place on a fitted point gives its latent).
        """
        xy = _as_2d(xy)
        if xy.shape[1] != self.embedding.shape[1]:
            raise ValueError(f"expected places of shape (M, {self.embedding.shape[1]}), "
                             f"got {xy.shape}")
        if self.method == "pca":
            w, mean = self.arrays["components"], self.arrays["mean"]   # (k, D), (D,)
            return xy[:, :len(w)] @ w + mean
        z = self._fitted_z()
        if len(xy) == 0:
            return np.zeros((0, z.shape[1]))
        if self.method == "umap":
            return _umap_inverse(self, xy).astype(np.float64)
        dist, idx = self.neighbours(xy, k)                 # (M, k)
        w = 1.0 / np.maximum(dist, 1e-12)
        return (w[:, :, None] * z[idx]).sum(1) / w.sum(1, keepdims=True)

    def neighbours(self, xy: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances, row indices) of the ``k`` fitted points nearest to each place on
        the map, nearest first -> (M, k) each (a k-d tree on ``embedding``, built once)."""
        from scipy.spatial import cKDTree

        xy = _as_2d(xy)
        k = int(min(max(k, 1), len(self.embedding)))
        if "tree" not in self._lazy:
            self._lazy["tree"] = cKDTree(np.asarray(self.embedding, dtype=np.float64))
        dist, idx = self._lazy["tree"].query(xy, k=k)
        return dist.reshape(len(xy), k), idx.reshape(len(xy), k)

    def _fitted_z(self) -> np.ndarray:
        if self.z is None:
            raise ValueError(f"this {METHOD_LABELS[self.method]} map was built without its "
                             "latents (pass z to restore()); it cannot place or invert points")
        return self.z


def restore(method: str, params: dict, embedding: np.ndarray, z: np.ndarray | None = None,
            arrays: dict | None = None, source: str = "cache") -> Projector:
    """A :class:`Projector` from stored arrays: the map ``embedding`` (N, n_components),
    the fitted latents ``z`` (N, D) for t-SNE and UMAP, and ``arrays`` (PCA's
    ``components`` (k, D) and ``mean`` (D,)). Nothing is refitted here; t-SNE's and
    UMAP's machinery for placing new points is rebuilt from ``z`` on first use."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in (arrays or {}).items()}
    if method == "pca" and not {"components", "mean"} <= set(arrays):
        raise ValueError("a PCA map needs its components and mean")
    emb = np.asarray(embedding, dtype=np.float64)
    if z is not None:
        z = _as_2d(z)
        if len(z) != len(emb):
            raise ValueError(f"{len(z)} latents for a map of {len(emb)} points")
    return Projector(method, dict(params), emb, z=z, arrays=arrays, source=source)


def _placer(proj: Projector):
    """What places new points on a map read back from disk (see the module doc)."""
    if proj.method == "pca":
        return _Linear(proj.arrays["components"], proj.arrays["mean"], proj.embedding.shape[1])
    z = proj._fitted_z()
    if proj.method == "umap":
        return _UMAPPlacer(_umap_neighbours(proj), proj.embedding)
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import PerplexityBasedNN

    rs = proj.params.get("random_state", 0)
    aff = PerplexityBasedNN(z, perplexity=proj.params["perplexity"], n_jobs=1, random_state=rs,
                            method="exact" if len(z) < 1000 else "auto")
    return TSNEEmbedding(np.ascontiguousarray(proj.embedding), aff, random_state=rs, n_jobs=1)


class _Linear:
    """PCA's map z -> (z - mean) W^T, padded with zero columns to ``n_components``."""

    def __init__(self, components, mean, n_components):
        self.components, self.mean, self.n_components = components, mean, n_components

    def transform(self, z):
        out = (np.asarray(z, dtype=np.float64) - self.mean) @ self.components.T
        return np.pad(out, ((0, 0), (0, self.n_components - out.shape[1])))


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
    lin = _Linear(pca.components_.astype(np.float64), pca.mean_.astype(np.float64), n_components)
    return Projector("pca", {"n_components": n_components, "random_state": random_state,
                             "explained_variance_ratio": ratio}, lin.transform(z), lin, z=z,
                     arrays={"components": lin.components, "mean": lin.mean})


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
    # The embedding keeps its fit's callbacks and would run them again when it places new
    # points (openTSNE's transform optimises too), updating a progress bar long finished.
    emb.gradient_descent_params["callbacks"] = None
    return Projector("tsne", {"n_components": n_components, "random_state": random_state,
                              "perplexity": used}, np.asarray(emb, dtype=np.float64), emb, z=z)


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
                     emb, _UMAPPlacer(nn, emb), z=z, _lazy={"nn": nn})


#: UMAP's optimisation epochs (umap-learn: 500 up to 10,000 points, 200 above).
UMAP_EPOCHS = 200


class _UMAPPlacer:
    """New points on a fitted UMAP map: the membership-weighted mean of the coordinates of
    their k nearest fitted points (umap-learn's ``transform`` initialisation)."""

    def __init__(self, nn, embedding: np.ndarray):
        self.nn, self.embedding = nn, embedding

    def transform(self, z: np.ndarray) -> np.ndarray:
        from .umap_inverse import smooth_knn_dist

        dist, idx = self.nn.kneighbors(z)
        sigma, rho = smooth_knn_dist(dist.astype(np.float32), float(dist.shape[1]))
        w = np.exp(-np.maximum(dist - rho[:, None], 0.0) / sigma[:, None])   # (M, k), w > 0
        return (w[:, :, None] * self.embedding[idx]).sum(1) / w.sum(1, keepdims=True)


def _umap_neighbours(proj: Projector):
    """The exact nearest-neighbour search over the fitted latents (the fit's own, or
    rebuilt once for a map read back from disk)."""
    if "nn" not in proj._lazy:
        from sklearn.neighbors import NearestNeighbors

        proj._lazy["nn"] = NearestNeighbors(n_neighbors=int(proj.params["n_neighbors"]),
                                            algorithm="brute").fit(proj._fitted_z())
    return proj._lazy["nn"]


def _umap_inverse(proj: Projector, xy: np.ndarray) -> np.ndarray:
    """umap-learn's inverse (:mod:`latentviz.umap_inverse`) over what the map keeps:
    each fitted point's sigma and rho from its k nearest latents (as the fit computes
    them), a and b for min_dist, the map's Delaunay graph (all built once per map). A
    place outside the map's convex hull starts its search at the nearest fitted point."""
    from . import umap_inverse as ui

    if "umap" not in proj._lazy:
        dist, _ = _umap_neighbours(proj).kneighbors(proj._fitted_z())
        sigmas, rhos = ui.smooth_knn_dist(dist.astype(np.float32), float(proj.params["n_neighbors"]))
        a, b = ui.find_ab_params(1.0, float(proj.params["min_dist"]))
        proj._lazy["umap"] = {"sigmas": sigmas, "rhos": rhos, "a": a, "b": b,
                              "graph": ui.delaunay_graph(proj.embedding)}
    st = proj._lazy["umap"]
    start = proj.neighbours(xy, 1)[1][:, 0]
    return ui.inverse_transform(xy, proj._fitted_z(), proj.embedding, sigmas=st["sigmas"],
                                rhos=st["rhos"], a=st["a"], b=st["b"],
                                n_epochs=int(proj.params.get("n_epochs", UMAP_EPOCHS)),
                                seed=int(proj.params.get("random_state", 0)),
                                graph=st["graph"], start=start)


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


@dataclass
class Alignment:
    """x -> scale * (x - centre) @ rotation + offset: a similarity transform (rotation
    and, where it fits better, reflection; uniform scale; shift) of a 2-D map."""

    rotation: np.ndarray     # (2, 2), orthogonal
    scale: float
    centre: np.ndarray       # (2,)
    offset: np.ndarray       # (2,)
    n_shared: int
    rmsd: float              # on the shared points, after alignment, in the reference's units

    @property
    def reflected(self) -> bool:
        return bool(np.linalg.det(self.rotation) < 0)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(xy, dtype=np.float64) - self.centre) @ self.rotation + self.offset

    def inverse(self, xy: np.ndarray) -> np.ndarray:
        """Places on the reference's frame back on the aligned map's own."""
        return (np.asarray(xy, dtype=np.float64) - self.offset) @ self.rotation.T / self.scale \
            + self.centre


def fit_alignment(xy: np.ndarray, ref: np.ndarray, *, scale: bool = True) -> Alignment:
    """The similarity transform that best maps ``xy`` (N, 2) onto ``ref`` (N, 2), row for
    row, in least squares: orthogonal Procrustes (``scipy.linalg.orthogonal_procrustes``,
    reflection allowed) on the centred points, s = tr(Sigma) / ||X||^2 (Schoenemann 1966)."""
    from scipy.linalg import orthogonal_procrustes

    a, b = np.asarray(xy, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) < 2:
        raise ValueError(f"need matching point sets (N >= 2, same shape), got {a.shape} "
                         f"and {b.shape}")
    ca, cb = a.mean(0), b.mean(0)
    a0, b0 = a - ca, b - cb
    r, sv_sum = orthogonal_procrustes(a0, b0)
    norm = float((a0 ** 2).sum())
    s = float(sv_sum / norm) if scale and norm > 0 else 1.0
    rmsd = float(np.sqrt(((s * a0 @ r - b0) ** 2).sum(1).mean()))
    return Alignment(r, s, ca, cb, len(a), rmsd)


def align(xy: np.ndarray, ids: np.ndarray, ref_xy: np.ndarray, ref_ids: np.ndarray, *,
          scale: bool = True) -> tuple[np.ndarray, Alignment]:
    """Map ``xy`` (its points' ids ``ids``) aligned onto the map ``ref_xy`` (``ref_ids``)
    on the points the two share -> (every point of ``xy`` moved, the alignment).

    For Compare (each panel onto the first: same test images, different models) and for
    two maps of one model with different seeds. Ids are the test-set ids the maps carry.
    """
    ids, ref_ids = np.asarray(ids), np.asarray(ref_ids)
    shared, ia, ib = np.intersect1d(ids, ref_ids, assume_unique=True, return_indices=True)
    if len(shared) < 3:
        raise ValueError(f"the maps share {len(shared)} points; aligning needs at least 3")
    al = fit_alignment(np.asarray(xy)[ia], np.asarray(ref_xy)[ib], scale=scale)
    return al(xy), al
