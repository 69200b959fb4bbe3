"""Figure builders for the app: arrays in, ``go.Figure`` (or, for image grids, HTML)
out, no Streamlit.

- :func:`latent_scatter`: a WebGL scatter of 2-D latent maps, one trace per label; every
  point carries its global id in ``customdata``, because a box or lasso selection comes
  back per trace with trace-local indices (:func:`selected_ids` reads the ids back).
- :func:`image_grid`: rows of images as a responsive HTML grid (one small PNG per image,
  enlarged by the browser); :func:`mosaic_png` / :func:`image_mosaic`: the same rows as
  one PNG, for downloads and the report.
- :func:`loss_curves`, :func:`class_counts`, :func:`scatter_panels` (side-by-side maps,
  the lambda-hot paper's Figures 2 and 3), :func:`metrics_table`.
- :func:`tree_layout` and :func:`tree_figure`: TreeVAE's learned tree as a dendrogram,
  from the list of node dicts that ``latentviz.tree.tree_table`` returns (keys ``id``,
  ``parent``, ``children``, ``depth``, ``is_leaf``, ``n_samples``, ``class_counts``).
- :func:`decoded_map` / :func:`add_decoded_map`: images decoded on a grid over a latent
  map, drawn under its scatter as one layout image; :func:`add_map_path`,
  :func:`selected_boxes` (the boxes of a box selection, for decoding their centres).
- :func:`figure_png`: a PNG through kaleido (needs a Chrome or Chromium); the app falls
  back to :func:`figure_html` where kaleido cannot start one.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

log = logging.getLogger(__name__)

# D3's category10 (matplotlib's tab10, the papers' colours) first: ten distinct classes.
PALETTE = qualitative.D3 + qualitative.Dark24
# Clusters are not classes: Plotly's Alphabet palette, none of whose first colours is one
# of the class colours above.
CLUSTER_PALETTE = qualitative.Alphabet
SELECTION_MODES = ("box", "lasso")


def colour(i: int) -> str:
    return PALETTE[int(i) % len(PALETTE)]


def _name(label, names: Sequence[str] | None) -> str:
    if names is not None and 0 <= int(label) < len(names):
        return str(names[int(label)])
    return str(label)


# ----------------------------------------------------------------------------- latent maps

def latent_scatter(xy: np.ndarray, labels: np.ndarray, ids: np.ndarray, *,
                   label_names: Sequence[str] | None = None, legend_title: str = "class",
                   title: str = "", hover: Sequence[str] | None = None,
                   extra: Mapping[str, Any] | None = None, height: int = 560,
                   axis_titles: Sequence[str] | None = None, clusters: bool = False,
                   selected: np.ndarray | None = None) -> go.Figure:
    """A WebGL scatter of ``xy`` (N, 2), one trace per label, ``customdata`` = ``ids``.

    ``extra``: an optional highlighted point set ``{"xy": (M, 2), "name": str}`` (an
    uploaded image), drawn as stars with customdata -1 so selections skip it.
    ``axis_titles``: the map's axes (e.g. ``("PC 1", "PC 2")``). ``clusters``: the labels
    are clusters, not classes: another palette and a diamond marker, so cluster 3 is not
    read as class 3. ``selected``: ids drawn as selected (a kept selection).
    """
    xy = np.asarray(xy)
    labels = np.asarray(labels)
    ids = np.asarray(ids)
    fig = go.Figure()
    sel = None if selected is None or len(selected) == 0 else np.asarray(selected)
    for lab in np.unique(labels):
        m = labels == lab
        text = None if hover is None else np.asarray(hover)[m]
        name = _name(lab, label_names)
        fig.add_trace(go.Scattergl(
            x=xy[m, 0], y=xy[m, 1], mode="markers",
            name=f"{legend_title} {name}" if clusters and label_names is None else name,
            customdata=ids[m], text=text,
            selectedpoints=None if sel is None else np.flatnonzero(np.isin(ids[m], sel)),
            marker={"size": 6, "opacity": 0.8,
                    "color": CLUSTER_PALETTE[int(lab) % len(CLUSTER_PALETTE)] if clusters
                    else colour(lab), "symbol": "diamond" if clusters else "circle"},
            hovertemplate="id %{customdata}<br>%{text}<extra>%{fullData.name}</extra>"
            if text is not None else "id %{customdata}<extra>%{fullData.name}</extra>"))
    if extra is not None:
        e = np.asarray(extra["xy"])
        fig.add_trace(go.Scattergl(
            x=e[:, 0], y=e[:, 1], mode="markers", name=extra.get("name", "yours"),
            customdata=np.full(len(e), -1),
            marker={"size": 18, "symbol": "star", "color": "black",
                    "line": {"width": 2, "color": "white"}},
            hovertemplate="%{fullData.name}<extra></extra>"))
    ax = list(axis_titles) if axis_titles else [None, None]
    # The top margin keeps the legend clear of the modebar floating over the corner.
    fig.update_layout(title=title or None, legend_title_text=legend_title, height=height,
                      dragmode="select", margin={"l": 40, "r": 10, "t": 44, "b": 40},
                      legend={"y": 1, "yanchor": "top", "itemsizing": "constant"})
    fig.update_xaxes(showticklabels=False, title=ax[0])
    fig.update_yaxes(showticklabels=False, title=ax[1])
    return fig


def selected_ids(event: Any) -> np.ndarray:
    """Global point ids of a Plotly selection (the ``customdata`` of each point).

    Accepts what ``st.plotly_chart(..., on_select="rerun")`` returns (``{"selection":
    {"points": [...]}}``), the selection dict itself, or None. Points without an id, and
    the highlight points (id < 0), are skipped; the result is sorted and unique.
    """
    if not event:
        return np.zeros(0, dtype=np.int64)
    sel = event.get("selection", event) if isinstance(event, Mapping) else event
    points = (sel or {}).get("points", []) or []
    out = []
    for p in points:
        cd = p.get("customdata") if isinstance(p, Mapping) else None
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is None:
            continue
        try:
            v = int(cd)
        except (TypeError, ValueError):
            continue
        if v >= 0:
            out.append(v)
    return np.unique(np.asarray(out, dtype=np.int64))


def scatter_panels(panels: Sequence[Mapping[str, Any]], *, label_names=None, cols: int = 2,
                   legend_title: str = "class", panel_height: int = 380) -> go.Figure:
    """Several latent maps side by side (``{"title", "xy", "labels"}`` each), one shared
    legend: the same class has the same colour in every panel."""
    n = len(panels)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p["title"] for p in panels],
                        horizontal_spacing=0.04, vertical_spacing=0.1 if rows > 1 else 0.0)
    seen = set()
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        xy, labels = np.asarray(p["xy"]), np.asarray(p["labels"])
        for lab in np.unique(labels):
            m = labels == lab
            fig.add_trace(go.Scattergl(
                x=xy[m, 0], y=xy[m, 1], mode="markers", name=_name(lab, label_names),
                legendgroup=str(lab), showlegend=lab not in seen,
                marker={"size": 4, "color": colour(lab), "opacity": 0.8}), row=r + 1, col=c + 1)
            seen.add(lab)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    # Titles in a smaller font, so a long checkpoint name stays inside its panel.
    fig.update_annotations(font_size=12)
    fig.update_layout(height=panel_height * rows, legend_title_text=legend_title,
                      legend={"y": 1, "yanchor": "top"},
                      margin={"l": 20, "r": 10, "t": 60, "b": 10})
    return fig


def class_counts(labels: np.ndarray, label_names: Sequence[str] | None = None, *,
                 n_classes: int | None = None, title: str = "") -> go.Figure:
    """A bar per class with its count among ``labels``."""
    labels = np.asarray(labels, dtype=np.int64)
    k = n_classes or (len(label_names) if label_names else int(labels.max(initial=-1)) + 1)
    counts = np.bincount(labels, minlength=k)[:k]
    names = [_name(i, label_names) for i in range(k)]
    fig = go.Figure(go.Bar(x=names, y=counts, marker_color=[colour(i) for i in range(k)],
                           text=counts, textposition="outside", cliponaxis=False))
    fig.update_yaxes(range=[0, max(1, int(counts.max(initial=0))) * 1.15])
    fig.update_layout(title=title or None, height=260, yaxis_title="images",
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    fig.update_xaxes(type="category")
    return fig


# ----------------------------------------------------------------------------- images

def _as_numpy_images(images, n_cols: int | None = None, fill: float = 0.5) -> np.ndarray:
    a = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    if a.ndim == 4 and n_cols:  # (N, C, H, W) -> rows of n_cols, the last one filled up
        n = len(a)
        rows = max(1, math.ceil(n / n_cols))
        a = np.concatenate([a, np.full((rows * n_cols - n, *a.shape[1:]), fill, a.dtype)])
        a = a.reshape(rows, n_cols, *a.shape[1:])
    elif a.ndim == 4:  # (N, C, H, W) -> one row
        a = a[None]
    if a.ndim != 5:
        raise ValueError(f"expected images (N, C, H, W) or (R, N, C, H, W), got {a.shape}")
    return np.clip(a, 0.0, 1.0)


def tile_rows(a: np.ndarray, pad: int, pad_value: float) -> np.ndarray:
    """Images (R, N, C, H, W) -> one float array (C, H', W'): R rows of N, ``pad`` pixels
    of ``pad_value`` around each (``torchvision.utils.make_grid``, which wraps a flat batch
    only, copies one channel into three (here one stays one) and leaves a lone image
    unpadded (here it is padded like the others))."""
    import torch
    from torchvision.utils import make_grid

    r, n, c, h, w = a.shape
    if r * n == 1:
        return np.pad(np.asarray(a[0, 0], np.float32), ((0, 0), (pad, pad), (pad, pad)),
                      constant_values=pad_value)
    grid = make_grid(torch.from_numpy(np.ascontiguousarray(a, np.float32)).reshape(r * n, c, h, w),
                     nrow=n, padding=pad, pad_value=pad_value)
    return grid[:c].numpy()


def image_mosaic(images, *, scale: int = 1, pad: int = 1, pad_value: float = 0.5,
                 n_cols: int | None = None) -> np.ndarray:
    """Images (R, N, C, H, W) or (N, C, H, W) in [0, 1] -> one uint8 mosaic of R rows of N
    (or (N, C, H, W) wrapped into rows of ``n_cols``), each image enlarged ``scale`` times
    (nearest neighbour, so 8 x 8 digits stay crisp: make_grid does not scale) and ``pad``
    pixels apart; (H', W') for one channel, (H', W', 3) for three."""
    a = _as_numpy_images(images, n_cols)
    if scale > 1:
        a = a.repeat(scale, axis=-2).repeat(scale, axis=-1)
    out = (tile_rows(a, pad, pad_value).transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _scale(cell_px: int, width: int) -> int:
    return max(1, int(round(cell_px / max(width, 1))))


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def mosaic_png(images, *, cell_px: int = 56, pad: int = 2, n_cols: int | None = None) -> bytes:
    """The mosaic of :func:`image_mosaic` as PNG bytes, each image about cell_px wide."""
    a = _as_numpy_images(images, n_cols)
    return png_bytes(image_mosaic(a, scale=_scale(cell_px, a.shape[-1]), pad=pad))


LABEL_REM_PER_CHAR = 0.42   # an average glyph of the grids' 0.8rem label font, in rem


def image_grid(images, *, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str = "",
               cell_px: int = 48, n_cols: int | None = None) -> str:
    """Rows of images as a responsive HTML grid: a CSS grid of one label column and one
    column per image, each image its own small PNG (data URL, native size, enlarged by the
    browser with nearest-neighbour sampling so 8 x 8 digits stay crisp). Columns are at
    most ``cell_px`` wide and shrink together when the page is narrower, the images
    keeping their aspect ratio and the labels wrapping; so the grid is never clipped and
    never leaves blank space (a fixed-size Plotly image shrank inside its fixed height).
    (N, C, H, W) input is one row, or rows of ``n_cols``; (R, N, C, H, W) is R rows.

    The markup names its parts for readers and tests: ``data-lv="grid"`` on the grid,
    ``title``, ``row-label``, ``col-label`` and ``image`` on the others."""
    a = _as_numpy_images(images, n_cols)
    r, n, c, h, w = a.shape
    cells = (np.transpose(a, (0, 1, 3, 4, 2)) * 255).round().astype(np.uint8)   # (R, N, H, W, C)
    img = ('<img data-lv="image" alt="" src="data:image/png;base64,{}" style="display:block;'
           f'width:100%;aspect-ratio:{w}/{h};image-rendering:pixelated;background:#808080">')
    label = ('<div data-lv="{kind}" style="font-size:0.8rem;line-height:1.25;{style}'
             'overflow-wrap:break-word">{text}</div>')
    parts = []
    for i in range(r):
        if row_labels:
            parts.append(label.format(kind="row-label",
                                      style="text-align:right;padding-right:0.3rem;",
                                      text=html.escape(str(row_labels[i]))))
        for j in range(n):
            cell = cells[i, j, ..., 0] if c == 1 else cells[i, j]
            parts.append(img.format(base64.b64encode(png_bytes(cell)).decode("ascii")))
    if col_labels:
        parts += ['<div></div>'] if row_labels else []
        parts += [label.format(kind="col-label", style="text-align:center;",
                               text=html.escape(str(t))) for t in col_labels]
    # The label column gives way to the images only down to about 16 characters a line.
    longest = max((len(str(t)) for t in row_labels or ()), default=0)
    floor = min(longest, 16) * LABEL_REM_PER_CHAR
    columns = (f"minmax({floor:.1f}rem, max-content) " if row_labels else "") + \
        f"repeat({n}, minmax(0, {int(cell_px)}px))"
    head = (f'<div data-lv="title" style="font-weight:600;margin-bottom:0.3rem">'
            f'{html.escape(title)}</div>') if title else ""
    return (f'<div data-lv="grid" data-rows="{r}" data-cols="{n}">{head}<div style="display:grid;'
            f'grid-template-columns:{columns};gap:2px;align-items:center;justify-content:start">'
            + "".join(parts) + "</div></div>")


# ----------------------------------------------------------------------------- decoded maps

def _grid_png_source(images, cell_px: int) -> str:
    a = _as_numpy_images(images)
    k = max(1, math.ceil(cell_px / max(a.shape[-1], 1)))
    big = image_mosaic(a, scale=k, pad=0)
    return "data:image/png;base64," + base64.b64encode(png_bytes(big)).decode("ascii")


def add_decoded_map(fig: go.Figure, decoded, *, opacity: float = 1.0, cell_px: int = 40,
                    row: int | None = None, col: int | None = None) -> go.Figure:
    """Draw a :class:`latentviz.decoded_map.DecodedGrid` under the traces of ``fig``: one
    PNG mosaic as a layout image stretched over the grid's extent in data coordinates, so
    each image sits on the place it was decoded at (its cell's centre). The axes are set
    to the extent, without autorange padding, so the mosaic fills the plot."""
    x0, x1, y0, y1 = decoded.grid.extent
    fig.add_layout_image(source=_grid_png_source(decoded.images, cell_px), xref="x", yref="y",
                         x=x0, y=y1, sizex=max(x1 - x0, 1e-9), sizey=max(y1 - y0, 1e-9),
                         xanchor="left", yanchor="top", sizing="stretch", layer="below",
                         opacity=opacity, row=row, col=col)
    fig.update_xaxes(range=[x0, x1], autorange=False, showgrid=False, zeroline=False,
                     row=row, col=col)
    fig.update_yaxes(range=[y0, y1], autorange=False, showgrid=False, zeroline=False,
                     row=row, col=col)
    return fig


def decoded_map(xy: np.ndarray, labels: np.ndarray, ids: np.ndarray, decoded, *,
                label_names: Sequence[str] | None = None, legend_title: str = "class",
                hover: Sequence[str] | None = None, opacity: float = 1.0,
                marker_opacity: float = 0.5, marker_size: int = 4, cell_px: int = 40,
                height: int = 640) -> go.Figure:
    """The latent scatter (:func:`latent_scatter`, selections work as there) over the images
    decoded on a grid across the map (:func:`add_decoded_map`); the title names the
    projection and how it was inverted (exact, or the t-SNE approximation)."""
    from .projections import METHOD_LABELS

    rows, cols = decoded.grid.shape
    title = (f"Decoded map: {rows} x {cols}, {METHOD_LABELS.get(decoded.method, decoded.method)}"
             f" inverse, {decoded.label}")
    fig = latent_scatter(xy, labels, ids, label_names=label_names, legend_title=legend_title,
                         title=title, hover=hover, height=height)
    fig.update_traces(marker={"opacity": marker_opacity, "size": marker_size},
                      selector={"type": "scattergl"})
    fig.update_layout(plot_bgcolor="black")
    return add_decoded_map(fig, decoded, opacity=opacity, cell_px=cell_px)


def add_map_path(fig: go.Figure, points: np.ndarray, *, name: str = "decoded path",
                 colour_: str = "white") -> go.Figure:
    """Mark places on a map (a decoded path's, or a box centre) as a line of markers; their
    customdata is -1, so :func:`selected_ids` skips them."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines+markers", name=name,
                             customdata=np.full(len(p), -1),
                             line={"color": colour_, "width": 2},
                             marker={"size": 9, "color": colour_, "symbol": "circle-open",
                                     "line": {"width": 2}},
                             hovertemplate="%{fullData.name}<extra></extra>"))
    return fig


def selected_boxes(event: Any) -> list[tuple[float, float, float, float]]:
    """The boxes of a Plotly box selection as (x0, x1, y0, y1) each, sorted within each
    axis: ``st.plotly_chart(..., on_select="rerun")`` returns them under
    ``selection.box`` (``{"x": [x0, x1], "y": [y0, y1]}`` each). Malformed ones are skipped."""
    if not event:
        return []
    sel = event.get("selection", event) if isinstance(event, Mapping) else event
    boxes = (sel or {}).get("box", []) if isinstance(sel, Mapping) else []
    out = []
    for b in boxes or []:
        try:
            xs = [float(v) for v in b["x"]][:2]
            ys = [float(v) for v in b["y"]][:2]
        except (KeyError, TypeError, ValueError):
            continue
        if len(xs) == 2 and len(ys) == 2 and np.isfinite(xs + ys).all():
            out.append((min(xs), max(xs), min(ys), max(ys)))
    return out


# ----------------------------------------------------------------------------- training

def loss_curves(train: Sequence[tuple[float, Mapping[str, float]]],
                test: Sequence[tuple[float, Mapping[str, float]]] = (), *,
                height: int = 260) -> go.Figure:
    """One panel per named loss term: train as a line, test as dashed markers.

    ``train`` and ``test`` are ``(epoch, {term: value})`` points; the epoch may be
    fractional (running means reported inside an epoch).
    """
    terms: list[str] = []
    for _, t in list(train) + list(test):
        terms += [k for k in t if k not in terms and k != "total"]
    terms = terms or ["recon"]
    fig = make_subplots(rows=1, cols=len(terms), subplot_titles=terms,
                        horizontal_spacing=0.06)
    for i, term in enumerate(terms):
        for pts, name, dash in ((train, "train", "solid"), (test, "test", "dash")):
            xs = [x for x, t in pts if term in t]
            ys = [t[term] for _, t in pts if term in t]
            if not xs:
                continue
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=i == 0,
                                     line={"dash": dash, "color": colour(0 if name == "train" else 1)},
                                     marker={"size": 4}), row=1, col=i + 1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def metrics_table(rows: Iterable[Mapping[str, Any]], keys: Sequence[str] | None = None):
    """A pandas table, one row per checkpoint: ``{"name", "variant", "dataset", "epochs",
    "metrics": {...}}`` -> the metrics as columns, labelled and ordered as in
    :data:`latentviz.metrics.METRIC_LABELS` (only ``keys`` if given; others after them);
    metrics a model lacks are left empty."""
    import pandas as pd

    from .metrics import METRIC_LABELS

    rows = list(rows)
    found = {k for r in rows for k in (r.get("metrics") or {})}
    if keys is None:
        keys = [k for k in METRIC_LABELS if k in found] + sorted(found - set(METRIC_LABELS))
    else:
        keys = [k for k in keys if k in found]
    records = []
    for r in rows:
        m = r.get("metrics") or {}
        rec = {"checkpoint": r.get("name"), "variant": r.get("variant"),
               "dataset": r.get("dataset"), "epochs": r.get("epochs")}
        for k in keys:
            v = m.get(k)
            rec[METRIC_LABELS.get(k, k)] = float(v) if isinstance(v, (int, float)) else None
        records.append(rec)
    return pd.DataFrame.from_records(records)


def latent_activity(kl: np.ndarray, active: np.ndarray, height: int = 220) -> go.Figure:
    """Bars of the KL per latent dimension (nats per image), active units in colour and
    inactive ones grey: posterior collapse shown, not hidden."""
    kl = np.asarray(kl, dtype=float)
    fig = go.Figure(go.Bar(x=np.arange(len(kl)), y=kl,
                           marker_color=[colour(0) if a else "#bbb" for a in active],
                           hovertemplate="dimension %{x}: KL %{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 50, "r": 10, "t": 36, "b": 40},
                      title=f"KL per dimension: {int(np.sum(active))} of {len(kl)} active "
                            "(grey: inactive)")
    fig.update_xaxes(title="latent dimension", dtick=1 if len(kl) <= 32 else None)
    fig.update_yaxes(title="KL (nats)")
    return fig


# ----------------------------------------------------------------------------- TreeVAE

def tree_layout(table: Sequence[Mapping[str, Any]]) -> dict[int, tuple[float, float]]:
    """Positions of a tree's nodes: leaves at x = 0, 1, 2, ... in depth-first order,
    each internal node centred above its children, y = -depth."""
    nodes = {n["id"]: n for n in table}
    roots = [n["id"] for n in table if n.get("parent") is None]
    if len(roots) != 1:
        raise ValueError(f"a tree needs exactly one root (parent None), found {len(roots)}")
    pos: dict[int, tuple[float, float]] = {}
    next_leaf = [0.0]

    def place(i: int, depth: int) -> float:
        kids = [c for c in nodes[i].get("children") or [] if c in nodes]
        if not kids:
            x = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            xs = [place(c, depth + 1) for c in kids]
            x = (min(xs) + max(xs)) / 2
        pos[i] = (x, -float(nodes[i].get("depth", depth)))
        return x

    place(roots[0], 0)
    return pos


def _composition(counts, names) -> str:
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return "no test images"
    order = np.argsort(-counts)[:4]
    return ", ".join(f"{_name(c, names)}: {counts[c] / total:.0%}" for c in order if counts[c])


MAJORITY = 0.5   # a node takes its majority class's colour from this share on


def _majority(counts: Sequence[float]) -> int:
    """The class holding at least MAJORITY of ``counts``, else -1 (mixed or empty)."""
    total = float(sum(counts))
    if total <= 0:
        return -1
    c = int(np.argmax(counts))
    return c if counts[c] / total >= MAJORITY else -1


TREE_NARROWEST_PX = 480     # the dendrogram's width on the TreeVAE page at an 820-px window
TREE_FILL = 0.85            # the most of the gap to its row neighbour that a node marker takes
TREE_ROWS_SHARE = 0.65      # the tree's rows' share of the height: 0.68 x (1 - 0.04 spacing)


def tree_marker_sizes(nodes: Sequence[Mapping[str, Any]], pos: Mapping[int, tuple[float, float]],
                      narrowest_px: int = TREE_NARROWEST_PX, height: int = 560) -> np.ndarray:
    """Marker diameters (px) of ``nodes`` placed at ``pos`` (:func:`tree_layout`).

    By sample count: d = 14 + 36 sqrt(n / n_max), so area grows with the count. Capped by
    room: with the x axis spanning one slot per leaf, a chart ``narrowest_px`` wide (less
    the 20-px side margins) gives ``px = (narrowest_px - 20) / leaves`` pixels a unit, and
    a node at horizontal distance g from its nearest neighbour on the same row gets at
    most ``TREE_FILL * g * px``, never under 8 px (still a target to click). Rows, one a
    depth, lie in the upper ``TREE_ROWS_SHARE`` of a chart ``height`` tall (less its
    54-px margins), its y axis spanning one unit a depth and half a unit over and under,
    and no marker is taller than ``TREE_FILL`` of a row."""
    counts = np.array([n.get("n_samples", 0) for n in nodes], dtype=float)
    size = 14 + 36 * np.sqrt(counts / counts.max()) if counts.max() > 0 else np.full(len(nodes), 20.0)
    n_leaves = max(1, sum(1 for n in nodes if n.get("is_leaf")))
    px = (narrowest_px - 20) / n_leaves
    xy = np.array([pos[n["id"]] for n in nodes], dtype=float).reshape(-1, 2)
    same_row = np.isclose(xy[:, None, 1], xy[None, :, 1])
    np.fill_diagonal(same_row, False)
    gaps = np.where(same_row, np.abs(xy[:, None, 0] - xy[None, :, 0]), np.inf)
    gaps = gaps.min(axis=1, initial=np.inf)
    gaps[np.isinf(gaps)] = n_leaves                       # alone on its row: the whole width
    size = np.maximum(8.0, np.minimum(size, TREE_FILL * gaps * px))
    rows = float(np.ptp(xy[:, 1])) + 1.0 if len(xy) else 1.0
    return np.minimum(size, max(8.0, TREE_FILL * (height - 54) * TREE_ROWS_SHARE / rows))


def tree_figure(table: Sequence[Mapping[str, Any]], *, label_names: Sequence[str] | None = None,
                selected: int | None = None, height: int = 560,
                narrowest_px: int = TREE_NARROWEST_PX) -> go.Figure:
    """TreeVAE's tree as a dendrogram: marker area proportional to the node's sample
    count, colour = its majority class where one class holds at least half its images
    (grey where none does, as at a root that holds every class), hover = class
    composition; below each leaf a stacked bar of its classes. ``customdata`` on the node
    markers is the node id.

    Markers are sized in pixels while the chart takes its container's width, which a
    figure cannot know; so no marker is wider than its room in the narrowest chart the
    pages give, ``narrowest_px`` wide (the TreeVAE page at an 820-px window): the x axis
    spans exactly one slot per leaf, and a node gets at most ``TREE_FILL`` of the gap to
    its nearest neighbour on its row (see :func:`tree_marker_sizes`). The class legend lies
    below the bars, so the tree has the whole width."""
    pos = tree_layout(table)
    nodes = sorted(table, key=lambda n: n["id"])
    ex, ey = [], []
    for n in nodes:
        for c in n.get("children") or []:
            if c in pos:
                (x0, y0), (x1, y1) = pos[n["id"]], pos[c]
                ex += [x0, x0, x1, x1, None]
                ey += [y0, (y0 + y1) / 2, (y0 + y1) / 2, y1, None]
    leaves = [n for n in nodes if n.get("is_leaf")]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#999", "width": 1.5},
                             hoverinfo="skip", showlegend=False), row=1, col=1)
    size = tree_marker_sizes(nodes, pos, narrowest_px, height)
    major = [_majority(n.get("class_counts") or []) for n in nodes]
    text = [f"{'leaf' if n.get('is_leaf') else 'node'} {n['id']}<br>{int(n.get('n_samples', 0))} "
            f"images<br>{_composition(n.get('class_counts') or [], label_names)}" for n in nodes]
    fig.add_trace(go.Scatter(
        x=[pos[n["id"]][0] for n in nodes], y=[pos[n["id"]][1] for n in nodes],
        mode="markers+text", text=[str(n["id"]) for n in nodes], textposition="middle center",
        textfont={"color": "black", "size": np.clip(0.55 * size, 8, 12)},
        customdata=[n["id"] for n in nodes],
        hovertext=text, hoverinfo="text", showlegend=False, name="nodes",
        marker={"size": size, "color": [colour(m) if m >= 0 else "#bbb" for m in major],
                "symbol": ["square" if n.get("is_leaf") else "circle" for n in nodes],
                "line": {"width": [4 if n["id"] == selected else 1 for n in nodes],
                         "color": ["black" if n["id"] == selected else "white" for n in nodes]}}),
        row=1, col=1)
    k = max((len(n.get("class_counts") or []) for n in leaves), default=0)
    for c in range(k):
        fig.add_trace(go.Bar(
            x=[pos[n["id"]][0] for n in leaves],
            y=[(n["class_counts"][c] / max(1, sum(n["class_counts"]))) for n in leaves],
            name=_name(c, label_names), marker_color=colour(c), legendgroup=str(c),
            customdata=[n["id"] for n in leaves],
            hovertemplate="leaf %{customdata}: %{y:.0%}<extra>%{fullData.name}</extra>"),
            row=2, col=1)
    # The top margin keeps the root clear of the modebar that floats over the corner.
    fig.update_layout(barmode="stack", height=height, legend_title_text="class",
                      legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0},
                      margin={"l": 10, "r": 10, "t": 44, "b": 10}, clickmode="event+select")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False,
                     range=[-0.5, len(leaves) - 0.5])
    depth = max((-y for _, y in pos.values()), default=0.0)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False,
                     range=[-depth - 0.5, 0.5], row=1, col=1)
    fig.update_yaxes(title_text="leaf classes", tickformat=".0%", range=[0, 1], row=2, col=1)
    return fig


# ----------------------------------------------------------------------------- export

def figure_png(fig: go.Figure, *, width: int = 1200, height: int | None = None,
               scale: float = 1.0) -> bytes:
    """A PNG of ``fig`` through kaleido, which drives a local Chrome/Chromium.

    Raises RuntimeError (with kaleido's reason) where no browser can be started.
    """
    try:
        return fig.to_image(format="png", width=width, height=height or fig.layout.height or 600,
                            scale=scale)
    except Exception as exc:  # noqa: BLE001 - kaleido/choreographer raise many types
        raise RuntimeError(f"PNG export needs kaleido and a Chrome/Chromium: {exc}") from exc


def figure_html(fig: go.Figure) -> bytes:
    """A standalone, interactive HTML file of ``fig`` (plotly.js inlined: works offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")
