"""Sampling from chosen places in latent space, on the tiny trained checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import latentviz as lv
from latentviz import sampling


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return {name: lv.load(path)[0] for name, path in tiny_checkpoints.items()}


def shape_of(model):
    return tuple(model.config.image_shape)


def test_which_variants_sample_by_class():
    expect = {"vae": False, "beta_vae": False, "cvae": True, "lambda_hot": True,
              "kmeans": False, "branched": False, "fixed_output": False}
    got = {v: sampling.samples_by_class(v) for v in expect}
    assert got == expect
    assert sampling.samples_by_class("no such variant") is False


def test_class_rows_are_seeded_images_of_each_class(models):
    for name in ("lambda_hot", "cvae"):
        m = models[name]
        rows = sampling.class_rows(m, 5, seed=1)
        assert rows.shape == (10, 5, *shape_of(m))
        assert rows.min() >= 0 and rows.max() <= 1
        assert torch.equal(rows, sampling.class_rows(m, 5, seed=1))
        assert not torch.equal(rows, sampling.class_rows(m, 5, seed=2))
        # Every row draws the same noise (one generator, reseeded), so rows differ only
        # through the class: no two rows are the same.
        flat = rows.flatten(1)
        assert torch.cdist(flat, flat).add(torch.eye(10) * 1e9).min() > 1e-4


def test_lambda_hot_class_rows_come_from_the_class_prior(models):
    m = models["lambda_hot"]
    g = torch.Generator().manual_seed(0)
    # Same seed, class 3: sample() adds lambda * e_3 to the same noise class_rows draws.
    direct = m.sample(4, y=torch.tensor(3), generator=g)
    row = sampling.class_rows(m, 4, classes=[3], seed=0)[0]
    torch.testing.assert_close(direct, row)


def test_kmeans_model_centres_and_centre_rows(models):
    m = models["kmeans"]
    c = sampling.model_centres(m)
    np.testing.assert_array_equal(c, m.centres.numpy())
    assert sampling.model_centres(models["vae"]) is None
    imgs = sampling.centre_samples(m, c, 6, seed=0)
    assert imgs.shape == (c.shape[0], 6, *shape_of(m))
    # With no spread every sample of a row is the centre's decoding.
    still = sampling.centre_samples(m, c, 3, std=0.0)
    torch.testing.assert_close(still[:, 0], still[:, 2])
    torch.testing.assert_close(still[:, 0], sampling.decode(m, torch.as_tensor(c)))


def test_latent_clusters_then_centre_rows_for_any_model(models, digits):
    m = models["vae"]
    z = sampling.encode_mean(m, digits.x_test)
    cl = sampling.latent_clusters(z.numpy(), 4, random_state=0)
    assert cl.centres.shape == (4, m.config.latent_dim) and cl.labels.shape == (len(z),)
    assert set(cl.labels) == {0, 1, 2, 3}
    imgs = sampling.centre_samples(m, cl.centres, 5, std=0.5, seed=3)
    assert imgs.shape == (4, 5, *shape_of(m))
    torch.testing.assert_close(imgs, sampling.centre_samples(m, cl.centres, 5, std=0.5, seed=3))
    with pytest.raises(ValueError, match="k must be"):
        sampling.latent_clusters(z.numpy()[:3], 4)


def test_conditional_centre_rows_take_one_class_per_row(models):
    m = models["cvae"]
    c = np.zeros((2, m.config.latent_dim))
    a = sampling.centre_samples(m, c, 2, std=0.0, y=[1, 7])
    assert not torch.allclose(a[0], a[1])       # same z, different class


def test_interpolation_ends_at_the_two_reconstructions(models, digits):
    x = digits.x_test[:2]
    for name in ("vae", "cvae"):
        m = models[name]
        y = digits.y_test[:2]
        path = sampling.interpolate(m, x[0], x[1], 7, y_a=y[0], y_b=y[1])
        assert path.shape == (7, *shape_of(m))
        with torch.no_grad():
            ends = m.reconstruct(x, y if m.conditional else None)
        torch.testing.assert_close(path[0], ends[0])
        torch.testing.assert_close(path[-1], ends[1])
    with pytest.raises(ValueError, match="y_a and y_b"):
        sampling.interpolate(models["cvae"], x[0], x[1], 3)


def test_traversal_moves_only_the_chosen_dimension(models, digits):
    m = models["vae"]
    x = digits.x_test[5]
    row = sampling.traverse(m, x, dim=2, span=3.0, steps=5)
    assert row.shape == (5, *shape_of(m))
    with torch.no_grad():
        torch.testing.assert_close(row[2], m.reconstruct(x[None])[0])    # v = 0 in the middle
    mu = sampling.encode_mean(m, x[None])[0]
    z = mu.repeat(5, 1)
    z[:, 2] += torch.linspace(-3, 3, 5)
    torch.testing.assert_close(row, sampling.decode(m, z))
    with pytest.raises(ValueError, match="dim"):
        sampling.traverse(m, x, dim=m.config.latent_dim)


def test_random_samples_cover_the_class_mixture_prior(models):
    m = models["lambda_hot"]
    s = sampling.random_samples(m, 20, seed=0)
    assert s.shape == (20, *shape_of(m))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(20) % 10
    torch.testing.assert_close(s, m.sample(20, y=y, generator=g))
    assert sampling.random_samples(models["vae"], 3, seed=0).shape == (3, *shape_of(models["vae"]))
