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
