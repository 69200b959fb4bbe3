"""The decoded map: images decoded at places on a 2-D map come from the model's decoder, at
the latents the projection's inverse gives for those places, in one batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import latentviz as lv
from latentviz import decoded_map as DM
from latentviz import figures
from latentviz import projections as P


def known_decoder(model):
    """Replace the decoder by one whose output is known: an 8 x 8 logit image whose left
    half is z_0 and right half z_1 (plus the class, for a conditional model), counting
    the calls and batch sizes it sees."""
    calls = []

    def decode(z, y=None):
        calls.append(len(z))
        out = torch.zeros(len(z), 1, 8, 8)
        out[:, :, :, :4] = z[:, 0, None, None, None]
        out[:, :, :, 4:] = z[:, 1, None, None, None]
        if y is not None:
            out[:, 0, 0, 0] = y.float()
        return out

    model.decode = decode
    return calls


def tiny(variant="vae", latent_dim=2):
    return lv.build(variant, image_shape=(1, 8, 8), n_classes=3, latent_dim=latent_dim,
                    hidden=16).eval()


@pytest.fixture
def latent_2d():
    rng = np.random.default_rng(0)
    return rng.normal(size=(100, 2)) * np.array([3.0, 1.0]) + np.array([1.0, -2.0])


def test_grid_tiles_the_map_row_zero_at_the_top(latent_2d):
    g = DM.grid_over(latent_2d, 4)
    x0, x1, y0, y1 = g.extent
    assert (x0, x1, y0, y1) == tuple(np.r_[latent_2d.min(0)[[0]], latent_2d.max(0)[[0]],
                                             latent_2d.min(0)[[1]], latent_2d.max(0)[[1]]])
    assert g.shape == (4, 4) and g.points.shape == (16, 2)
    np.testing.assert_allclose(np.diff(g.xs), (x1 - x0) / 4)
    assert np.all(np.diff(g.ys) < 0)                        # top row first
    np.testing.assert_allclose(g.points[1], [g.xs[1], g.ys[0]])
    with pytest.raises(ValueError, match="between 1 and 64"):
        DM.grid_over(latent_2d, 0)


def test_pca_grid_decodes_the_exact_latent_of_each_cell(latent_2d):
    """A 2-D latent and PCA: each cell's image is the decoder at the cell's place mapped
    back exactly, and all cells go through the decoder in one call."""
    model = tiny()
    calls = known_decoder(model)
    proj = P.fit(latent_2d, "pca")
    out = DM.decoded_grid(model, proj, n=5)
    assert out.images.shape == (5, 5, 1, 8, 8) and calls == [25]
    assert out.exact and out.label == proj.inverse_label and out.method == "pca"
    z = proj.inverse_transform(out.grid.points)
    np.testing.assert_allclose(out.z, z)
    np.testing.assert_allclose(proj.transform(out.z), out.grid.points, atol=1e-9)
    want = torch.sigmoid(torch.as_tensor(z, dtype=torch.float32))    # (25, 2)
    got = out.images.reshape(25, 1, 8, 8)
    torch.testing.assert_close(got[:, 0, 0, 0], want[:, 0])
    torch.testing.assert_close(got[:, 0, 7, 7], want[:, 1])
    # the top-left cell decodes the largest PC-2 coordinate, the bottom-right the smallest
    assert out.grid.points[0, 1] > out.grid.points[-1, 1]


def test_tsne_grid_is_labelled_approximate_and_decodes_knn_means():
    rng = np.random.default_rng(1)
    z, emb = rng.normal(size=(60, 6)), rng.normal(size=(60, 2))
    model = tiny(latent_dim=6)
    known_decoder(model)
    proj = P.restore("tsne", {"perplexity": 5.0}, emb, z)
    out = DM.decoded_grid(model, proj, n=3, k=5)
    assert out.images.shape == (3, 3, 1, 8, 8)
    assert not out.exact and out.label == "approximate (k-NN mean of latents)"
    np.testing.assert_allclose(out.z, proj.inverse_transform(out.grid.points, k=5))


def test_decode_at_returns_images_and_the_nearest_real_points(latent_2d):
    model = tiny()
    calls = known_decoder(model)
    proj = P.fit(latent_2d, "pca")
    places = proj.embedding[[3, 40]] + 1e-6
    d = DM.decode_at(model, proj, places, k_nearest=5)
    assert d.images.shape == (2, 1, 8, 8) and calls == [2]
    assert d.nearest.shape == (2, 5) and list(d.nearest[:, 0]) == [3, 40]
    assert np.all(np.diff(d.nearest_dist, axis=1) >= 0)
    np.testing.assert_allclose(d.z, latent_2d[[3, 40]], atol=1e-5)


def test_decoded_path_runs_along_the_straight_segment_on_the_map(latent_2d):
    model = tiny()
    known_decoder(model)
    proj = P.fit(latent_2d, "pca")
    p0, p1 = np.array([-2.0, 0.5]), np.array([3.0, -1.0])
    d = DM.decoded_path(model, proj, p0, p1, steps=6)
    assert d.images.shape == (6, 1, 8, 8)
    np.testing.assert_allclose(d.points[0], p0)
    np.testing.assert_allclose(d.points[-1], p1)
    np.testing.assert_allclose(np.diff(d.points, axis=0), np.tile((p1 - p0) / 5, (5, 1)))
    with pytest.raises(ValueError, match="steps"):
        DM.decoded_path(model, proj, p0, p1, steps=1)


def test_a_conditional_model_decodes_the_class_under_each_place(latent_2d):
    model = tiny("cvae")
    known_decoder(model)
    proj = P.fit(latent_2d, "pca")
    labels = (proj.embedding[:, 0] > np.median(proj.embedding[:, 0])).astype(int)  # right: 1
    out = DM.decoded_grid(model, proj, n=4, labels=labels)
    cls = out.images[..., 0, 0, 0]                                 # sigmoid(y) at pixel (0, 0)
    assert out.y.tolist() == [0, 0, 1, 1] * 4
    torch.testing.assert_close(cls, torch.sigmoid(torch.tensor([[0.0, 0, 1, 1]] * 4)))
    assert DM.decode_at(model, proj, [[0.0, 0.0]], y=2).y.tolist() == [2]
    with pytest.raises(ValueError, match="conditional"):
        DM.decoded_grid(model, proj, n=2)


def test_decoded_map_figure_puts_the_mosaic_under_the_scatter(latent_2d):
    model = tiny()
    known_decoder(model)
    proj = P.fit(latent_2d, "pca")
    out = DM.decoded_grid(model, proj, n=4)
    ids = np.arange(len(latent_2d))
    fig = figures.decoded_map(proj.embedding, np.zeros(len(ids), int), ids, out)
    (img,) = fig.layout.images
    x0, x1, y0, y1 = out.grid.extent
    assert img.source.startswith("data:image/png;base64,") and img.layer == "below"
    assert (img.x, img.y, img.sizex, img.sizey) == pytest.approx((x0, y1, x1 - x0, y1 - y0))
    assert tuple(fig.layout.xaxis.range) == pytest.approx((x0, x1))
    assert "PCA" in fig.layout.title.text and out.label in fig.layout.title.text
    assert np.array_equal(figures.selected_ids({"selection": {"points": [
        {"customdata": 5}]}}), [5])
    figures.add_map_path(fig, [[0, 0], [1, 1]])
    assert list(fig.data[-1].customdata) == [-1, -1]


def test_selected_boxes_reads_plotly_box_selections():
    event = {"selection": {"points": [], "box": [{"x": [2.0, -1.0], "y": [0.5, 3.0]},
                                                 {"x": "bad"}]}}
    assert figures.selected_boxes(event) == [(-1.0, 2.0, 0.5, 3.0)]
    assert figures.selected_boxes(None) == [] and figures.selected_boxes({"selection": {}}) == []
