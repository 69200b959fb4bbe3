"""UMAP's inverse transform (McInnes, Healy, Melville 2018; umap-learn 0.5's
``UMAP.inverse_transform``), from a map and its latents alone, without importing umap-learn.

For a place p on the map: find the fitted points around p along the map's Delaunay graph
(breadth first from p's triangle, the min(D, N) nearest of them on the map), weight each
by UMAP's low-dimensional membership 1 / (1 + a d^{2b}), start z at the weighted mean of
their latents, then refine z by SGD on the fuzzy cross entropy against them (n_epochs / 3
epochs, negative samples from all fitted points), with each fitted point's sigma and rho
from ``smooth_knn_dist``.

Why a port: umap-learn builds the Delaunay adjacency point by point in Python (3.5 s for
10,000 points), compiles its SGD epoch anew on every call (0.7 s), and importing it
compiles numba code that cannot be cached (3 to 8 s on two busy cores). Here the adjacency
is one sparse build, the numba functions are cached on disk (``cache=True``), and the
result equals umap-learn's up to float32 rounding (``tests/test_decoded_map.py``).
The numba bodies below are umap-learn's (BSD-3-Clause), with its Euclidean output metric
inlined so that they can be cached.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
NPY_FLOATMAX = float(np.finfo(np.float32).max)
INT32_MIN, INT32_MAX = np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1


@numba.njit(locals={"psum": numba.types.float32, "lo": numba.types.float32,
                    "mid": numba.types.float32, "hi": numba.types.float32}, cache=True)
def smooth_knn_dist(distances, k, n_iter=64, local_connectivity=1.0, bandwidth=1.0):
    """Per point sigma (and rho, the distance to its nearest neighbour) such that
    sum_j exp(-(d_ij - rho_i) / sigma_i) = log2(k): umap-learn's ``smooth_knn_dist``.
    ``distances`` (N, k) float32, each row sorted, its own point first."""
    target = np.log2(k) * bandwidth
    rho = np.zeros(distances.shape[0], dtype=np.float32)
    result = np.zeros(distances.shape[0], dtype=np.float32)
    mean_distances = np.mean(distances)
    for i in range(distances.shape[0]):
        lo = 0.0
        hi = NPY_FLOATMAX
        mid = 1.0
        ith_distances = distances[i]
        non_zero_dists = ith_distances[ith_distances > 0.0]
        if non_zero_dists.shape[0] >= local_connectivity:
            index = int(np.floor(local_connectivity))
            interpolation = local_connectivity - index
            if index > 0:
                rho[i] = non_zero_dists[index - 1]
                if interpolation > SMOOTH_K_TOLERANCE:
                    rho[i] += interpolation * (non_zero_dists[index] - non_zero_dists[index - 1])
            else:
                rho[i] = interpolation * non_zero_dists[0]
        elif non_zero_dists.shape[0] > 0:
            rho[i] = np.max(non_zero_dists)
        for n in range(n_iter):
            psum = 0.0
            for j in range(1, distances.shape[1]):
                d = distances[i, j] - rho[i]
                if d > 0:
                    psum += np.exp(-(d / mid))
                else:
                    psum += 1.0
            if np.fabs(psum - target) < SMOOTH_K_TOLERANCE:
                break
            if psum > target:
                hi = mid
                mid = (lo + hi) / 2.0
            else:
                lo = mid
                if hi >= NPY_FLOATMAX:
                    mid *= 2
                else:
                    mid = (lo + hi) / 2.0
        result[i] = mid
        if rho[i] > 0.0:
            mean_ith_distances = np.mean(ith_distances)
            if result[i] < MIN_K_DIST_SCALE * mean_ith_distances:
                result[i] = MIN_K_DIST_SCALE * mean_ith_distances
        else:
            if result[i] < MIN_K_DIST_SCALE * mean_distances:
                result[i] = MIN_K_DIST_SCALE * mean_distances
    return result, rho


@numba.njit("i4(i8[:])", cache=True)
def _tau_rand_int(state):
    state[0] = (((state[0] & 4294967294) << 12) & 0xFFFFFFFF) ^ (
        (((state[0] << 13) & 0xFFFFFFFF) ^ state[0]) >> 19)
    state[1] = (((state[1] & 4294967288) << 4) & 0xFFFFFFFF) ^ (
        (((state[1] << 2) & 0xFFFFFFFF) ^ state[1]) >> 25)
    state[2] = (((state[2] & 4294967280) << 17) & 0xFFFFFFFF) ^ (
        (((state[2] << 3) & 0xFFFFFFFF) ^ state[2]) >> 11)
    return state[0] ^ state[1] ^ state[2]


@numba.njit(cache=True)
def _clip(val):
    if val > 4.0:
        return 4.0
    elif val < -4.0:
        return -4.0
    return val


@numba.njit(fastmath=True, cache=True)
def _euclidean_grad(x, y):
    result = 0.0
    for i in range(x.shape[0]):
        result += (x[i] - y[i]) ** 2
    d = np.sqrt(result)
    grad = (x - y) / (1e-6 + d)
    return d, grad


@numba.njit(fastmath=True, cache=True)
def _optimize_inverse(head_embedding, tail_embedding, head, tail, weight, sigmas, rhos,
                      n_epochs, n_vertices, epochs_per_sample, rng_state, gamma,
                      initial_alpha, negative_sample_rate):
    """umap-learn's ``optimize_layout_inverse`` (move_other=False), all epochs in one call."""
    dim = head_embedding.shape[1]
    alpha = initial_alpha
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    epoch_of_next_negative_sample = epochs_per_negative_sample.copy()
    epoch_of_next_sample = epochs_per_sample.copy()
    for n in range(n_epochs):
        for i in range(epochs_per_sample.shape[0]):
            if epoch_of_next_sample[i] <= n:
                j = head[i]
                k = tail[i]
                current = head_embedding[j]
                other = tail_embedding[k]
                dist_output, grad_dist_output = _euclidean_grad(current, other)
                w_l = weight[i]
                grad_coeff = -(1 / (w_l * sigmas[k] + 1e-6))
                for d in range(dim):
                    grad_d = _clip(grad_coeff * grad_dist_output[d])
                    current[d] += grad_d * alpha
                epoch_of_next_sample[i] += epochs_per_sample[i]
                n_neg_samples = int((n - epoch_of_next_negative_sample[i])
                                    / epochs_per_negative_sample[i])
                for p in range(n_neg_samples):
                    k = _tau_rand_int(rng_state) % n_vertices
                    other = tail_embedding[k]
                    dist_output, grad_dist_output = _euclidean_grad(current, other)
                    w_h = np.exp(-max(dist_output - rhos[k], 1e-6) / (sigmas[k] + 1e-6))
                    grad_coeff = -gamma * ((0 - w_h) / ((1 - w_h) * sigmas[k] + 1e-6))
                    for d in range(dim):
                        grad_d = _clip(grad_coeff * grad_dist_output[d])
                        current[d] += grad_d * alpha
                epoch_of_next_negative_sample[i] += (n_neg_samples
                                                     * epochs_per_negative_sample[i])
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
    return head_embedding


def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """a, b of the low-dimensional membership 1 / (1 + a d^{2b}) that best fits the offset
    exponential decay of ``min_dist`` and ``spread`` (umap-learn's ``find_ab_params``)."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.zeros(xv.shape)
    yv[xv < min_dist] = 1.0
    yv[xv >= min_dist] = np.exp(-(xv[xv >= min_dist] - min_dist) / spread)
    params, _ = curve_fit(curve, xv, yv)
    return float(params[0]), float(params[1])


def _epochs_per_sample(weights: np.ndarray, n_epochs: int) -> np.ndarray:
    result = -1.0 * np.ones(weights.shape[0], dtype=np.float64)
    n_samples = n_epochs * (weights / weights.max())
    result[n_samples > 0] = float(n_epochs) / np.float64(n_samples[n_samples > 0])
    return result


def delaunay_graph(embedding: np.ndarray):
    """(triangulation, adjacency): the Delaunay triangulation of a 2-D map (qhull "QJ", as
    umap-learn) and its vertex adjacency, every pair in a simplex, self-loops included."""
    from scipy.spatial import Delaunay

    tri = Delaunay(np.ascontiguousarray(embedding, dtype=np.float32), incremental=True,
                   qhull_options="QJ")
    s = tri.simplices                                               # (T, 3)
    n = len(embedding)
    rows = np.repeat(s, s.shape[1], axis=1).ravel()
    cols = np.tile(s, (1, s.shape[1])).ravel()
    adj = sp.coo_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(n, n)).tocsr()
    adj.sum_duplicates()
    adj.sort_indices()
    return tri, adj


def _breadth_first(indptr, indices, start: int, min_vertices: int) -> np.ndarray:
    """umap-learn's ``breadth_first_search``: vertices by graph distance from ``start``,
    every vertex of each level up to the one where ``min_vertices`` were first exceeded."""
    explored, queue, levels = [], [start], {start: 0}
    head, max_level = 0, np.inf
    while head < len(queue):
        node = queue[head]
        head += 1
        explored.append(node)
        if max_level == np.inf and len(explored) > min_vertices:
            max_level = max(levels.values())
        if levels[node] + 1 < max_level:
            for nb in indices[indptr[node]:indptr[node + 1]]:
                nb = int(nb)
                if nb not in levels:
                    queue.append(nb)
                    levels[nb] = levels[node] + 1
    return np.array(explored)


def inverse_transform(xy: np.ndarray, z: np.ndarray, embedding: np.ndarray, *,
                      sigmas: np.ndarray, rhos: np.ndarray, a: float, b: float,
                      n_epochs: int, seed: int, graph=None, start=None) -> np.ndarray:
    """Latents (M, D) float32 for places ``xy`` (M, 2) on a UMAP map ``embedding`` (N, 2)
    of the latents ``z`` (N, D), as umap-learn's ``UMAP.inverse_transform`` computes them
    for a model fitted with ``n_epochs`` and ``transform_seed=seed``.

    ``graph``: :func:`delaunay_graph` of the map (built if None); ``start``: the vertex
    each place's search starts from where it lies outside the map's convex hull (umap-learn
    takes an arbitrary simplex there; default: the vertex of the last simplex, as it does).
    """
    x = np.ascontiguousarray(xy, dtype=np.float32)
    z32 = np.ascontiguousarray(z, dtype=np.float32)
    emb32 = np.ascontiguousarray(embedding, dtype=np.float32)
    tri, adj = graph if graph is not None else delaunay_graph(emb32)
    m, (n, d) = len(x), z32.shape
    simplex = tri.find_simplex(x)
    first = tri.simplices[simplex, 0]
    if start is not None:
        first = np.where(simplex < 0, np.asarray(start), first)
    k = min(d, n)                                  # umap-learn's min_vertices
    cols = np.empty((m, k), dtype=np.int32)
    dists = np.empty((m, k), dtype=np.float64)
    for i, v in enumerate(first):
        nb = _breadth_first(adj.indptr, adj.indices, int(v), k)
        diff = x[i] - emb32[nb]                    # float32, summed in float64, as umap's numba
        dd = np.sqrt((diff * diff).astype(np.float64).sum(1))
        order = np.argsort(dd)[:k]
        cols[i], dists[i] = nb[order], dd[order]
    rows = np.repeat(np.arange(m, dtype=np.int32), k)
    weights = 1.0 / (1.0 + a * dists.ravel() ** (2 * b))
    graph_mn = sp.coo_matrix((weights, (rows, cols.ravel())), shape=(m, n))
    csr = graph_mn.tocsr()
    inds, w = csr.indices.reshape(m, k), csr.data.reshape(m, k)
    total = np.zeros(m)
    for j in range(k):         # scikit-learn's l1 normalisation sums in this order
        total += np.abs(w[:, j])
    w = w / total[:, None]
    init = np.zeros((m, d), dtype=np.float32)
    for j in range(k):         # umap-learn's init_transform, in its order and precision
        init = (init.astype(np.float64) + w[:, j, None] * z32[inds[:, j]]).astype(np.float32)
    epochs = int(n_epochs // 3.0)
    eps = _epochs_per_sample(graph_mn.data, epochs)
    rng_state = np.random.RandomState(seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    return _optimize_inverse(init, z32, graph_mn.row, graph_mn.col, graph_mn.data,
                             np.asarray(sigmas), np.asarray(rhos), epochs, n, eps, rng_state,
                             1.0, 1.0 / 4.0, 5.0)
