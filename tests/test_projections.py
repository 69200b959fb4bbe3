"""Projections: arrays in, arrays out; a fixed random_state gives the same map; a fitted
map places new points (PCA by its linear map, t-SNE through openTSNE, UMAP by its
neighbours)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from latentviz import projections as P


@pytest.fixture(scope="module")
def blobs():
    """Three well-separated Gaussian blobs in 10-D (60 points each) and their labels."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8.0, size=(3, 10))
    y = np.repeat(np.arange(3), 60)
    return centres[y] + rng.normal(size=(180, 10)), y


# The library runs without the app's projection packages (the GPU servers lack them).
needs_tsne = pytest.mark.skipif(importlib.util.find_spec("openTSNE") is None,
                                reason="openTSNE is not installed")
needs_umap = pytest.mark.skipif(importlib.util.find_spec("umap") is None,
                                reason="umap-learn is not installed")


def separation(xy, y) -> float:
    """Mean distance between blob centres over mean spread within blobs."""
    c = np.stack([xy[y == k].mean(0) for k in range(3)])
    within = np.mean([np.linalg.norm(xy[y == k] - c[k], axis=1).mean() for k in range(3)])
    between = np.mean([np.linalg.norm(c[i] - c[j]) for i in range(3) for j in range(i + 1, 3)])
    return between / within


def test_pca_is_deterministic_and_its_transform_matches_the_fit(blobs):
    z, y = blobs
    a = P.fit(z, "pca", random_state=0)
    b = P.pca(z, random_state=1)
    assert a.embedding.shape == (180, 2)
    np.testing.assert_allclose(np.abs(a.embedding), np.abs(b), atol=1e-8)
    np.testing.assert_allclose(a.transform(z[:5]), a.embedding[:5], atol=1e-8)
    assert sum(a.params["explained_variance_ratio"]) > 0.5
    assert separation(a.embedding, y) > 3, f"separation {separation(a.embedding, y):.2f}"


def test_pca_of_a_one_dimensional_latent_still_gives_two_columns():
    z = np.arange(10.0)[:, None]
    p = P.fit(z, "pca")
    assert p.embedding.shape == (10, 2) and np.all(p.embedding[:, 1] == 0)
    assert p.transform(z[:2]).shape == (2, 2)


@needs_tsne
def test_tsne_same_seed_same_map_and_places_new_points_near_their_blob(blobs):
    z, y = blobs
    seen = []
    a = P.fit(z, "tsne", random_state=3, progress=lambda f, m: seen.append(f))
    b = P.tsne(z, random_state=3)
    np.testing.assert_allclose(a.embedding, b, atol=1e-6)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 5
    assert separation(a.embedding, y) > 3, f"separation {separation(a.embedding, y):.2f}"
    new = a.transform(z[:3] + 0.01)          # three points of blob 0
    assert new.shape == (3, 2)
    c = np.stack([a.embedding[y == k].mean(0) for k in range(3)])
    nearest = np.linalg.norm(new[:, None] - c[None], axis=2).argmin(1)
    assert (nearest == 0).all(), f"new points landed nearest blobs {nearest}"


@needs_tsne
def test_tsne_caps_perplexity_for_small_samples():
    z = np.random.default_rng(0).normal(size=(20, 5))
    p = P.fit(z, "tsne", perplexity=30, random_state=0)
    assert p.params["perplexity"] == pytest.approx(19 / 3)
    assert np.isfinite(p.embedding).all()


@needs_umap
def test_umap_is_deterministic_with_a_seed_and_places_new_points_near_their_blob(blobs):
    z, y = blobs
    seen = []
    a = P.fit(z, "umap", random_state=0, n_neighbors=10, progress=lambda f, m: seen.append(f))
    b = P.umap(z, random_state=0, n_neighbors=10)
    np.testing.assert_allclose(a.embedding, b, atol=1e-5)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 3   # start, neighbours, end
    assert a.params["neighbours"] == "exact" and a.params["n_neighbors"] == 10
    assert separation(a.embedding, y) > 3, f"separation {separation(a.embedding, y):.2f}"
    # A fitted point goes back inside its own blob, close to where the fit put it.
    back = a.transform(z[:4])
    spread = np.linalg.norm(a.embedding[y == 0] - a.embedding[y == 0].mean(0), axis=1).mean()
    assert np.linalg.norm(back - a.embedding[:4], axis=1).max() < spread
    for k in range(3):                       # new points, one blob at a time
        new = a.transform(z[y == k][:5] + 0.01)
        c = np.stack([a.embedding[y == j].mean(0) for j in range(3)])
        nearest = np.linalg.norm(new[:, None] - c[None], axis=2).argmin(1)
        assert (nearest == k).all(), f"blob {k}'s points landed nearest blobs {nearest}"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="method"):
        P.fit(np.zeros((10, 3)), "mds")
    with pytest.raises(ValueError, match="at least 3"):
        P.fit(np.zeros((2, 3)), "pca")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        P.fit(np.zeros(10), "pca")


def test_sample_indices_are_seeded_sorted_and_unique():
    a = P.sample_indices(1000, 50, seed=4)
    assert np.array_equal(a, P.sample_indices(1000, 50, seed=4))
    assert not np.array_equal(a, P.sample_indices(1000, 50, seed=5))
    assert len(np.unique(a)) == 50 and np.all(np.diff(a) > 0)
    assert np.array_equal(P.sample_indices(10, 50, seed=0), np.arange(10))


# ----------------------------------------------------------------------------- inverse

def test_pca_inverse_of_a_two_dimensional_latent_gives_the_latents_back():
    z = np.random.default_rng(1).normal(size=(50, 2)) @ np.array([[2.0, 0.5], [0.0, 0.3]])
    p = P.fit(z, "pca")
    np.testing.assert_allclose(p.inverse_transform(p.embedding), z, atol=1e-10)
    assert p.inverse_exact and p.inverse_label.startswith("exact")


def test_pca_inverse_of_a_higher_latent_is_the_projection_onto_the_components(blobs):
    z, _ = blobs
    p = P.fit(z, "pca")
    back = p.inverse_transform(p.embedding)                     # (N, 10)
    w, mean = p.arrays["components"], p.arrays["mean"]
    np.testing.assert_allclose(back, mean + (z - mean) @ w.T @ w, atol=1e-9)
    np.testing.assert_allclose(p.transform(back), p.embedding, atol=1e-9)   # consistent
    xy = np.array([[0.3, -2.0], [10.0, 4.0]])                  # any place, not just fitted ones
    np.testing.assert_allclose(p.transform(p.inverse_transform(xy)), xy, atol=1e-9)


def test_a_restored_pca_map_places_and_inverts_like_the_fitted_one(blobs):
    z, _ = blobs
    p = P.fit(z, "pca")
    r = P.restore("pca", p.params, p.embedding, None, p.arrays)
    np.testing.assert_allclose(r.transform(z[:7]), p.transform(z[:7]), atol=1e-12)
    np.testing.assert_allclose(r.inverse_transform(p.embedding[:7]),
                               p.inverse_transform(p.embedding[:7]), atol=1e-12)


def test_tsne_inverse_is_the_distance_weighted_mean_of_the_nearest_latents():
    rng = np.random.default_rng(0)
    emb, z = rng.normal(size=(40, 2)), rng.normal(size=(40, 5))
    p = P.restore("tsne", {"perplexity": 5.0}, emb, z)
    assert not p.inverse_exact and "approximate" in p.inverse_label
    np.testing.assert_allclose(p.inverse_transform(emb[:3]), z[:3])   # on a point: its latent
    place = np.array([[0.1, -0.2]])
    d = np.linalg.norm(emb - place, axis=1)
    near = np.argsort(d)[:4]
    want = (z[near] / d[near, None]).sum(0) / (1 / d[near]).sum()
    np.testing.assert_allclose(p.inverse_transform(place, k=4)[0], want, rtol=1e-10)


def test_a_map_without_its_latents_says_it_cannot_invert():
    p = P.restore("tsne", {"perplexity": 5.0}, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="latents"):
        p.inverse_transform(np.zeros((1, 2)))


@needs_umap
def test_umap_inverse_matches_umap_learn(blobs):
    """The port in latentviz.umap_inverse against umap-learn's own inverse_transform on the
    same fitted map; also from a map restored from its coordinates and latents alone."""
    import warnings

    import umap
    from sklearn.neighbors import NearestNeighbors

    z, y = blobs
    p = P.fit(z, "umap", random_state=0, n_neighbors=10)
    dist, idx = NearestNeighbors(n_neighbors=10).fit(z).kneighbors(z)
    ref = umap.UMAP(n_neighbors=10, random_state=0, transform_seed=0, n_jobs=1,
                    n_epochs=P.UMAP_EPOCHS,
                    precomputed_knn=(idx.astype(np.int32), dist.astype(np.float32), None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(ref.fit_transform(z), p.embedding, atol=1e-6)
        places = 0.8 * p.embedding[:12] + 0.2 * p.embedding[60:72]   # inside the hull
        want = ref.inverse_transform(places)
    got = p.inverse_transform(places)
    assert got.shape == (12, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    restored = P.restore("umap", p.params, p.embedding, z)
    np.testing.assert_allclose(restored.inverse_transform(places), want, atol=1e-4, rtol=0)
    # and a place far outside the map still gets a latent near its nearest blob
    far = p.embedding[y == 2].mean(0) + 100 * (p.embedding[y == 2].mean(0) - p.embedding.mean(0))
    zf = p.inverse_transform(far[None])[0]
    c = np.stack([z[y == k].mean(0) for k in range(3)])
    assert np.linalg.norm(c - zf, axis=1).argmin() == 2


# ----------------------------------------------------------------------------- alignment

def test_procrustes_recovers_a_rotated_reflected_scaled_shifted_copy():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(60, 2))
    t = 0.7
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    flip = np.array([[1.0, 0.0], [0.0, -1.0]])
    moved = 3.5 * ref @ rot @ flip + np.array([10.0, -4.0])
    ids = np.arange(60)
    perm = rng.permutation(60)[:45]            # the copy holds 45 of the points, shuffled
    aligned, al = P.align(moved[perm], ids[perm], ref, ids)
    np.testing.assert_allclose(aligned, ref[perm], atol=1e-9)
    assert al.reflected and al.scale == pytest.approx(1 / 3.5) and al.rmsd < 1e-9
    assert al.n_shared == 45
    np.testing.assert_allclose(al.inverse(aligned), moved[perm], atol=1e-9)   # and back
    _, al2 = P.align(moved[perm], ids[perm], ref, ids, scale=False)
    assert al2.scale == 1.0 and al2.rmsd > 1


def test_alignment_needs_shared_points():
    with pytest.raises(ValueError, match="share 0 points"):
        P.align(np.zeros((5, 2)), np.arange(5), np.zeros((5, 2)), np.arange(5, 10))


@needs_tsne
def test_two_seeds_of_one_tsne_map_agree_once_aligned(blobs):
    """Two seeds' maps differ by more than a similarity transform, but aligned (here the
    second one also mirrored, as another run may well draw it) they nearly coincide."""
    z, _ = blobs
    a, b = P.fit(z, "tsne", random_state=0), P.fit(z, "tsne", random_state=1)
    ids = np.arange(len(z))
    spread = np.sqrt(((a.embedding - a.embedding.mean(0)) ** 2).sum(1).mean())
    mirrored = b.embedding * np.array([-1.0, 1.0])
    before = np.sqrt(((a.embedding - mirrored) ** 2).sum(1).mean())
    aligned, al = P.align(mirrored, ids, a.embedding, ids)
    assert al.reflected
    assert al.rmsd < 0.2 * spread < before, f"rmsd {al.rmsd:.2f} after, {before:.2f} before"
    np.testing.assert_allclose(np.sqrt(((aligned - a.embedding) ** 2).sum(1).mean()), al.rmsd)


@needs_tsne
def test_a_restored_tsne_map_places_new_points_near_their_blob(blobs):
    """A t-SNE map read back from disk has no fitted object: its affinities are rebuilt
    from the latents on first use, and new points land by their own blob."""
    z, y = blobs
    fitted = P.fit(z, "tsne", random_state=0)
    r = P.restore("tsne", fitted.params, fitted.embedding.astype(np.float16), z)
    c = np.stack([r.embedding[y == k].mean(0) for k in range(3)])
    for k in range(3):
        new = r.transform(z[y == k][:4] + 0.01)
        nearest = np.linalg.norm(new[:, None] - c[None], axis=2).argmin(1)
        assert (nearest == k).all(), f"blob {k}'s points landed nearest blobs {nearest}"
