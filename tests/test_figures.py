"""Figure builders and selection-to-ids: plain functions, checked on hand-made inputs."""
from __future__ import annotations

import io
import shutil

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from latentviz import figures

from conftest import read_grid

# A hand-made TreeVAE table: root 0 -> (1, 2); 1 -> (3, 4); 2 is a leaf; 3 and 4 are leaves.
TREE = [
    {"id": 0, "parent": None, "children": [1, 2], "depth": 0, "is_leaf": False,
     "n_samples": 100, "class_counts": [50, 30, 20], "mean_path_prob": 1.0},
    {"id": 1, "parent": 0, "children": [3, 4], "depth": 1, "is_leaf": False,
     "n_samples": 60, "class_counts": [45, 10, 5], "mean_path_prob": 0.6},
    {"id": 2, "parent": 0, "children": [], "depth": 1, "is_leaf": True,
     "n_samples": 40, "class_counts": [5, 20, 15], "mean_path_prob": 0.4},
    {"id": 3, "parent": 1, "children": [], "depth": 2, "is_leaf": True,
     "n_samples": 45, "class_counts": [44, 1, 0], "mean_path_prob": 0.45},
    {"id": 4, "parent": 1, "children": [], "depth": 2, "is_leaf": True,
     "n_samples": 15, "class_counts": [1, 9, 5], "mean_path_prob": 0.15},
]


# ----------------------------------------------------------------------------- selections

def test_selected_ids_reads_customdata_of_every_trace():
    event = {"selection": {"points": [
        {"curve_number": 0, "point_index": 3, "customdata": 17},
        {"curve_number": 2, "point_index": 0, "customdata": [5]},   # list form
        {"curve_number": 1, "point_index": 9, "customdata": 17},    # duplicate
        {"curve_number": 3, "point_index": 0, "customdata": -1},    # the uploaded star
        {"curve_number": 0, "point_index": 1},                      # no id at all
    ], "box": [], "lasso": []}}
    assert figures.selected_ids(event).tolist() == [5, 17]
    assert figures.selected_ids(event["selection"]).tolist() == [5, 17]


@pytest.mark.parametrize("empty", [None, {}, {"selection": {"points": []}}, {"selection": None}])
def test_selected_ids_of_no_selection_is_empty(empty):
    out = figures.selected_ids(empty)
    assert out.dtype == np.int64 and out.size == 0


def test_scatter_carries_global_ids_so_selections_map_back():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(50, 2))
    labels = rng.integers(0, 3, 50)
    ids = np.arange(1000, 1050)
    fig = figures.latent_scatter(xy, labels, ids, label_names=["a", "b", "c"],
                                 extra={"xy": np.zeros((1, 2)), "name": "yours"})
    data = [t for t in fig.data if t.name != "yours"]
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert [t.name for t in data] == ["a", "b", "c"]
    assert sorted(np.concatenate([t.customdata for t in data]).tolist()) == ids.tolist()
    for t in data:  # every trace's points are exactly its label's points, with their ids
        lab = ["a", "b", "c"].index(t.name)
        assert set(t.customdata) == set(ids[labels == lab])
        np.testing.assert_allclose(t.x, xy[labels == lab, 0])
    # A selection of trace 1's point 2 maps to that point's global id.
    t1 = data[1]
    event = {"selection": {"points": [{"curve_number": 1, "point_index": 2,
                                       "customdata": int(t1.customdata[2])}]}}
    assert figures.selected_ids(event).tolist() == [int(t1.customdata[2])]
    assert fig.data[-1].customdata.tolist() == [-1]


def test_scatter_panels_share_one_legend_entry_per_class():
    panels = [{"title": f"m{i}", "xy": np.random.default_rng(i).normal(size=(30, 2)),
               "labels": np.arange(30) % 3} for i in range(4)]
    fig = figures.scatter_panels(panels, label_names=["x", "y", "z"], cols=2)
    shown = [t.name for t in fig.data if t.showlegend]
    assert shown == ["x", "y", "z"]
    assert len(fig.data) == 12
    assert [a.text for a in fig.layout.annotations] == ["m0", "m1", "m2", "m3"]


# ----------------------------------------------------------------------------- images

def test_mosaic_tiles_rows_and_pads():
    imgs = np.zeros((2, 3, 1, 4, 5), np.float32)
    imgs[1, 2] = 1.0
    m = figures.image_mosaic(imgs, pad=1, pad_value=0.5)
    assert m.shape == (2 * 5 + 1, 3 * 6 + 1) and m.dtype == np.uint8
    assert m[0, 0] == 128                          # padding
    assert m[1, 1] == 0                            # first image
    assert (m[6:10, 13:18] == 255).all()           # row 1, column 2
    big = figures.image_mosaic(imgs, scale=3, pad=2)
    assert big.shape == (2 * (12 + 2) + 2, 3 * (15 + 2) + 2)


def test_mosaic_wraps_a_flat_batch_and_fills_the_last_row():
    flat = np.ones((5, 1, 2, 2), np.float32)
    m = figures.image_mosaic(flat, n_cols=4, pad=0, pad_value=0.5)
    assert m.shape == (4, 8)
    assert (m[2:, 2:] == 128).all() and (m[2:, :2] == 255).all()


def test_a_lone_image_is_padded_like_a_grid_of_them():
    # torchvision's make_grid returns a batch of one unpadded; the mosaic must not.
    m = figures.image_mosaic(np.ones((1, 1, 2, 2), np.float32), pad=1, pad_value=0.5)
    assert m.shape == (4, 4) and (m[1:3, 1:3] == 255).all()
    assert m[0].tolist() == [128] * 4 and m[:, 0].tolist() == [128] * 4


def test_image_grid_is_a_responsive_html_grid_of_each_image_at_native_size():
    imgs = np.random.default_rng(0).random((3, 4, 1, 8, 8)).astype(np.float32)
    markup = figures.image_grid(imgs, row_labels=["r0", "r1", "<b>r2</b> long"], cell_px=32,
                                col_labels=["a", "b", "c", "d"], title="T & t")
    g = read_grid(markup)
    assert (g.n_rows, g.n_cols) == (3, 4) and len(g.images) == 12
    assert g.rows == ["r0", "r1", "<b>r2</b> long"], "labels are text, escaped, never markup"
    assert g.cols == ["a", "b", "c", "d"] and g.title == "T & t"
    first = np.asarray(g.images[0])
    assert g.images[0].size == (8, 8) and g.images[0].mode == "L"
    assert np.array_equal(first, (imgs[0, 0, 0] * 255).round().astype(np.uint8)), \
        "the PNG is the image itself; the browser enlarges it"
    # a label column wide enough for its longest label (14 characters here), then columns
    # of at most cell_px that may shrink (never clip)
    floor = 14 * figures.LABEL_REM_PER_CHAR
    assert f"grid-template-columns:minmax({floor:.1f}rem, max-content) repeat(4, minmax(0, 32px))" \
        in markup
    assert "image-rendering:pixelated" in markup and "aspect-ratio:8/8" in markup


def test_image_grid_keeps_colour_and_wraps_a_flat_batch_at_n_cols():
    imgs = np.zeros((5, 3, 4, 6), np.float32)
    imgs[:, 0] = 1.0                                            # red
    g = read_grid(figures.image_grid(imgs, n_cols=3))
    assert (g.n_rows, g.n_cols) == (2, 3) and g.rows == []
    assert g.images[0].mode == "RGB" and g.images[0].size == (6, 4)
    assert np.asarray(g.images[0])[0, 0].tolist() == [255, 0, 0]
    assert "grid-template-columns:repeat(3, minmax(0, 48px))" in \
        figures.image_grid(imgs, n_cols=3), "no label column without row labels"


def test_mosaic_png_round_trips():
    png = figures.mosaic_png(np.zeros((6, 1, 8, 8)), n_cols=3, cell_px=16)
    assert Image.open(io.BytesIO(png)).size == (3 * 18 + 2, 2 * 18 + 2)


# ----------------------------------------------------------------------------- charts

def test_loss_curves_one_panel_per_term_train_and_test():
    train = [(0.5, {"recon": 50.0, "kl": 3.0}), (1.0, {"recon": 40.0, "kl": 4.0})]
    test = [(1.0, {"recon": 42.0, "kl": 4.1, "total": 46.1})]
    fig = figures.loss_curves(train, test)
    assert [a.text for a in fig.layout.annotations] == ["recon", "kl"]   # "total" is not a term
    names = [(t.name, list(t.y)) for t in fig.data]
    assert ("train", [50.0, 40.0]) in names and ("test", [42.0]) in names


def test_class_counts_counts_every_class_even_absent_ones():
    fig = figures.class_counts(np.array([0, 0, 2]), ["a", "b", "c"])
    assert list(fig.data[0].y) == [2, 0, 1] and list(fig.data[0].x) == ["a", "b", "c"]


def test_metrics_table_labels_orders_and_leaves_missing_empty():
    rows = [{"name": "m1", "variant": "vae", "dataset": "digits", "epochs": 3,
             "metrics": {"test_recon": 20.0, "acc_logreg": 0.9}},
            {"name": "m2", "variant": "lambda_hot", "dataset": "digits", "epochs": 3,
             "metrics": {"test_recon": 19.0, "acc_own": 0.95, "custom": 1.0}}]
    df = figures.metrics_table(rows)
    assert list(df.columns) == ["checkpoint", "variant", "dataset", "epochs",
                                "recon BCE / image", "logreg acc", "own classifier acc", "custom"]
    assert np.isnan(df.loc[0, "own classifier acc"]) and df.loc[1, "recon BCE / image"] == 19.0
    only = figures.metrics_table(rows, keys=["acc_own", "dp"])
    assert list(only.columns)[4:] == ["own classifier acc"]


# ----------------------------------------------------------------------------- TreeVAE

def test_tree_layout_puts_leaves_left_to_right_and_parents_above_children():
    pos = figures.tree_layout(TREE)
    assert pos[3] == (0.0, -2.0) and pos[4] == (1.0, -2.0) and pos[2] == (2.0, -1.0)
    assert pos[1] == (0.5, -1.0)            # centred over its children
    assert pos[0] == (1.25, 0.0)            # centred over its children's span


def test_tree_layout_needs_one_root():
    with pytest.raises(ValueError, match="exactly one root"):
        figures.tree_layout([dict(TREE[1], parent=None), *TREE])


def test_tree_figure_sizes_nodes_by_samples_and_stacks_leaf_classes():
    fig = figures.tree_figure(TREE, label_names=["a", "b", "c"], selected=1)
    nodes = next(t for t in fig.data if t.name == "nodes")
    ids = list(nodes.customdata)
    assert ids == [0, 1, 2, 3, 4]
    size = dict(zip(ids, nodes.marker.size))
    assert size[0] > size[1] > size[3] > size[2] > size[4]      # 100 > 60 > 45 > 40 > 15
    assert nodes.marker.line.width[1] > nodes.marker.line.width[0]   # the selected node
    assert "a: 98%" in nodes.hovertext[3]                        # 44 of 45
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert [b.name for b in bars] == ["a", "b", "c"]
    shares = np.array([b.y for b in bars])                       # (classes, leaves)
    np.testing.assert_allclose(shares.sum(axis=0), 1.0)
    assert list(bars[0].customdata) == [2, 3, 4]
    edges = next(t for t in fig.data if t.mode == "lines")
    assert sum(v is None for v in edges.x) == 4                  # four parent-child edges


def _split_tree(n_leaves: int) -> list[dict]:
    """A tree grown the way TreeVAE grows one: split the leaf holding most samples in two
    (60/40) until there are ``n_leaves``."""
    table = [{"id": 0, "parent": None, "children": [], "depth": 0, "is_leaf": True,
              "n_samples": 10000, "class_counts": [10000]}]
    while sum(n["is_leaf"] for n in table) < n_leaves:
        big = max((n for n in table if n["is_leaf"]), key=lambda n: n["n_samples"])
        for share in (0.6, 0.4):
            kid = {"id": len(table), "parent": big["id"], "children": [], "is_leaf": True,
                   "depth": big["depth"] + 1, "n_samples": int(big["n_samples"] * share)}
            kid["class_counts"] = [kid["n_samples"]]
            big["children"].append(kid["id"])
            table.append(kid)
        big["is_leaf"] = False
    return table


@pytest.mark.parametrize("n_leaves", [10, 20, 40])
def test_tree_markers_on_a_row_never_overlap_in_the_narrowest_chart(n_leaves):
    """At an 820-px window the dendrogram is 480 px wide; a 20-leaf tree's leaves drew
    over each other there. Now each marker fits the room beside its row neighbours."""
    table = _split_tree(n_leaves)
    fig = figures.tree_figure(table)
    nodes = next(t for t in fig.data if t.name == "nodes")
    assert tuple(fig.layout.xaxis.range) == (-0.5, n_leaves - 0.5)      # one slot a leaf
    px = (figures.TREE_NARROWEST_PX - 20) / n_leaves
    x, y, size = (np.asarray(v, dtype=float) for v in (nodes.x, nodes.y, nodes.marker.size))
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if y[i] == y[j]:
                assert abs(x[i] - x[j]) * px >= (size[i] + size[j]) / 2
    assert size.min() >= 8                                    # still something to click
    assert size[0] == size.max()                              # the root, alone on its row
    assert fig.layout.legend.orientation == "h"               # the tree has the full width


def test_a_wider_chart_gives_a_crowded_tree_bigger_markers():
    table = _split_tree(20)
    pos = figures.tree_layout(table)
    narrow = figures.tree_marker_sizes(table, pos, narrowest_px=480)
    wide = figures.tree_marker_sizes(table, pos, narrowest_px=940)
    leaves = [i for i, n in enumerate(table) if n["is_leaf"]]
    assert (wide[leaves] >= narrow[leaves]).all()
    assert wide[leaves].mean() > 1.1 * narrow[leaves].mean()


# ----------------------------------------------------------------------------- export

def test_figure_png_says_why_it_cannot(monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("no browser here")
    monkeypatch.setattr(go.Figure, "to_image", refuse)
    with pytest.raises(RuntimeError, match="kaleido and a Chrome/Chromium: no browser here"):
        figures.figure_png(go.Figure())


def test_figure_html_is_standalone():
    html = figures.figure_html(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])))
    assert b"<html>" in html[:100] and b"plotly" in html and len(html) > 1_000_000  # js inlined


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("google-chrome")),
                    reason="kaleido needs a local Chrome/Chromium")
def test_figure_png_through_kaleido():
    pytest.importorskip("kaleido")
    png = figures.figure_png(go.Figure(go.Scattergl(x=[0, 1], y=[1, 0])), width=200, height=150)
    assert Image.open(io.BytesIO(png)).size == (200, 150)
