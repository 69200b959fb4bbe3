"""Streamlit pieces the pages share: the sidebar, widgets generated from config
dataclasses, the model every page starts from, image grids, the training view."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from .. import figures
from ..checkpoints import CheckpointError
from ..data import Dataset, DatasetError
from ..models import VARIANTS, ConfigError
from ..models.base import LatentModel
from . import cache, state
from .state import Entry

NO_CHART_BAR = {"displayModeBar": False}
MIN_CELL_PX = 56   # a 28 x 28 digit drawn at 28 px is hard to read on a wide page


# ----------------------------------------------------------------------------- sidebar

def sidebar() -> Entry | None:
    """Device, and the checkpoint every page shows: the session's current checkpoint.

    The choice is kept under ``state.CHECKPOINT`` (a key no widget owns, so it outlives
    page changes) and mirrored in the URL (``?checkpoint=NAME``) so a link opens the same
    model. Precedence: a checkpoint just made (``state.SELECT_NEXT``), the URL, the
    session's choice, the default."""
    through_app()
    ents = cache.usable()
    with st.sidebar:
        st.caption(f"Device: **{cache.device_name()}**")
        if not ents:
            st.caption("No checkpoint yet: train one on the Home or Train page.")
            return None
        by_path = {e.path: e for e in ents}
        path = _current_path(ents, by_path)
        st.session_state[state.CHECKPOINT] = path
        st.session_state[state.CHECKPOINT_WIDGET] = path
        st.selectbox("Checkpoint", list(by_path), key=state.CHECKPOINT_WIDGET,
                     format_func=lambda p: by_path[p].name + (" · collapsed" if
                                                                by_path[p].collapsed else ""),
                     on_change=_picked, help="The model every page shows until you pick "
                     "another (the link in the address bar opens it too).")
        e = by_path[path]
        st.query_params["checkpoint"] = st.session_state[_URL_WRITTEN] = e.name
        title = VARIANTS[e.variant].title if e.variant in VARIANTS else e.variant
        latent = e.meta.get("config", {}).get("latent_dim", "?")
        st.caption(f"{title} on {e.dataset} · {e.epochs} epochs · {latent}-d latent · {e.source}")
        if e.collapsed:
            st.warning(f"Posterior collapse: {e.collapsed}", icon=None)
        return e


def through_app() -> None:
    """Make a page opened first by its own URL run inside app.py's navigation.

    With a ``pages/`` folder beside app.py, Streamlit starts in its old multipage mode
    (the folder's scripts as pages, app.py never run) until some session has run app.py
    and so called ``st.navigation``; a bookmark opened on a fresh server would get a
    narrow page without Home. Leaving that mode and rerunning runs app.py, whose
    navigation resolves the same URL to the same page."""
    from streamlit.runtime.pages_manager import PagesManager

    # Only on a session's first run: a rerun would drop a click being handled (and
    # AppTest, which re-enters the old mode on every run, keeps its clicks).
    first = not st.session_state.get("lv_session_started")
    st.session_state["lv_session_started"] = True
    if PagesManager.uses_pages_directory and first:
        PagesManager.uses_pages_directory = False
        st.rerun()


def _picked() -> None:
    st.session_state[state.CHECKPOINT] = st.session_state[state.CHECKPOINT_WIDGET]


def make_current(key: str) -> None:
    """on_change of a page's own checkpoint picker whose value is an Entry: it becomes
    the session's current checkpoint (the sidebar and every page follow)."""
    picked = st.session_state.get(key)
    if picked is not None:
        st.session_state[state.CHECKPOINT] = picked.path


_URL_WRITTEN = "lv_checkpoint.url"   # the name this session last put in the URL


def _current_path(ents: list[Entry], by_path: dict[str, Entry]) -> str:
    nxt = st.session_state.pop(state.SELECT_NEXT, None)
    if nxt in by_path:
        return nxt
    cur = st.session_state.get(state.CHECKPOINT)
    asked = st.query_params.get("checkpoint")
    # The URL speaks only when it says something this session did not write there itself:
    # a link opened in a new tab, or the address edited by hand.
    if asked is not None and asked != st.session_state.get(_URL_WRITTEN):
        match = next((e for e in ents if e.name == asked), None)
        if match is not None:
            return match.path
        st.toast(f"No checkpoint named '{asked[:80]}': showing the default.")
    if cur in by_path:
        return cur
    return default_entry(ents).path


# The lambda-hot paper's Figure 2, top to bottom: what Compare shows first.
PAPER_ORDER = ("vae", "beta_vae", "lambda_hot", "kmeans")


def default_entry(ents: list[Entry]) -> Entry:
    """The user's newest run, else a shipped lambda-hot model (the paper's), else the first."""
    yours = [e for e in ents if e.source == "yours"]
    if yours:
        return max(yours, key=lambda e: e.mtime)
    return next((e for e in ents if e.variant == "lambda_hot"), ents[0])


def compare_defaults(ents: list[Entry], cur: Entry, n: int = 4) -> list[Entry]:
    """The current checkpoint and, on its dataset, one model of each other variant in the
    order of the paper's Figure 2 (then the rest), collapsed ones last: a set of
    variants to compare, not three runs of one."""
    out, seen = [cur], {cur.variant}
    same = [e for e in ents if e.dataset == cur.dataset and e.path != cur.path]
    same.sort(key=lambda e: (bool(e.collapsed), PAPER_ORDER.index(e.variant)
                             if e.variant in PAPER_ORDER else 99))
    for e in same:
        if len(out) < n and e.variant not in seen:
            out.append(e)
            seen.add(e.variant)
    return out


def current() -> Entry | None:
    path = st.session_state.get(state.CHECKPOINT)
    return cache.entry_for(path) if path else None


def load(entry: Entry) -> tuple[LatentModel, Dataset]:
    """The entry's model and dataset, or an error on the page and a stop."""
    try:
        return cache.model(entry), cache.checkpoint_dataset(entry.meta)
    except (CheckpointError, DatasetError, ConfigError) as exc:
        st.error(f"Cannot open {entry.name}: {exc}")
        st.stop()


def require_model() -> tuple[Entry, LatentModel, Dataset]:
    """The sidebar's checkpoint, loaded; pages without one explain and stop."""
    entry = current()
    if entry is None:
        st.info("No checkpoint is available yet. Train one on the **Home** page (one click) "
                "or the **Train** page.")
        st.stop()
    m, data = load(entry)
    return entry, m, data


# ----------------------------------------------------------------------------- tables

# Short headers, so a table of every checkpoint fits 1000 px without a sideways scroll.
SHORT = {"recon BCE / image": "recon", "KL / image": "KL", "loss / image": "loss",
         "logreg acc": "logreg", "NN acc": "NN", "kNN acc": "kNN", "forest acc": "forest",
         "own classifier acc": "own", "k-means ACC": "km ACC",
         "k-means NMI": "km NMI", "k-means ARI": "km ARI",
         "dendrogram purity": "DP", "leaf purity": "LP", "active units": "active",
         "checkpoint": "checkpoint", "epochs": "ep."}


def metrics_dataframe(df: pd.DataFrame, *, help_text: str | None = None,
                      key: str | None = None, shown: int | None = None) -> None:
    """A metrics table (``figures.metrics_table``) as the pages show it: short headers with
    the full name as the column's help, three decimals, a missing value as a dash. Shown
    as text: Streamlit's grid gives numeric columns a fixed width and writes "None" for a
    missing number, which made the table scroll sideways at 1400 px. The checkpoint column
    is pinned: in a narrow window the metrics scroll sideways under the names."""
    full = {SHORT.get(c, c): c for c in df.columns}
    df = df.rename(columns=lambda c: SHORT.get(c, c))
    text = {"checkpoint", "source", "variant", "dataset"}
    for c in df.columns:
        if c not in text:
            fmt = "{:.0f}" if c in ("ep.", "active") else "{:.3f}"
            df[c] = [fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v)
                     else "—" for v in pd.to_numeric(df[c], errors="coerce")]
    order = list(df.columns)
    if key is not None and shown is not None and len(order) > shown:
        optional = [c for c in order if c not in text and c != "ep."] + \
            [c for c in order if c == "ep."]
        keep = st.multiselect("Columns", optional, default=optional[:shown - len(text & set(order))],
                              key=key, format_func=lambda c: full[c] if full[c] != c else c,
                              help="Pick the metrics to show; the table fits a narrow window.")
        order = [c for c in order if c in text] + [c for c in optional if c in keep]
    config = {c: st.column_config.TextColumn(c, help=full[c]) for c in df.columns if full[c] != c}
    if "checkpoint" in df.columns:  # a narrow window scrolls the metrics, not the names
        config["checkpoint"] = st.column_config.TextColumn("checkpoint", pinned=True)
    st.dataframe(df, hide_index=True, width="stretch", column_order=order, column_config=config)
    if help_text:
        st.caption(help_text)


# ----------------------------------------------------------------------------- config widgets

def _step(default: float) -> float:
    if default == 0:
        return 0.1
    return 10.0 ** math.floor(math.log10(abs(default)))


def config_inputs(cls, *, key: str, defaults: dict | None = None, skip=(), only=None,
                  cols: int = 2) -> dict[str, Any]:
    """One widget per field of a config dataclass, from its ``param`` metadata.

    Numbers are free number inputs (no min/max), so an out-of-range value reaches the
    config's own check and its ConfigError message is what the user reads.
    """
    defaults = defaults or {}
    fields = [f for f in dataclasses.fields(cls) if f.metadata and f.name not in skip
              and (only is None or f.name in only)]
    values: dict[str, Any] = {}
    columns = st.columns(cols)
    for i, f in enumerate(fields):
        meta = f.metadata
        default = defaults.get(f.name, f.default)
        rng = _range(meta)
        help_text = meta["help"] + (f". Allowed: {rng}." if rng else "") + \
            (f" Paper: {meta['paper']}." if meta.get("paper") else "")
        k = f"{key}.{f.name}"
        with columns[i % cols]:
            if meta.get("choices"):
                ch = list(meta["choices"])
                values[f.name] = st.selectbox(f.name, ch, index=ch.index(default) if default in ch
                                              else 0, help=help_text, key=k)
            elif isinstance(default, bool):
                values[f.name] = st.checkbox(f.name, value=default, help=help_text, key=k)
            elif isinstance(default, int):
                values[f.name] = int(st.number_input(f.name, value=default, step=1,
                                                     help=help_text, key=k))
            elif isinstance(default, float):
                values[f.name] = float(st.number_input(f.name, value=default, step=_step(default),
                                                       format="%g", help=help_text, key=k))
            else:
                continue
            paper = f" · paper: {meta['paper']}" if meta.get("paper") else ""
            st.caption(f"{meta['help']} (default {default!r}{paper})")
    return values


def _range(meta) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return ""
    left = (f"> {lo}" if meta.get("min_exclusive") else f">= {lo}") if lo is not None else ""
    right = f"<= {hi}" if hi is not None else ""
    return " and ".join(s for s in (left, right) if s)


# ----------------------------------------------------------------------------- images

def images(imgs, *, row_labels=None, col_labels=None, title: str = "", cell_px: int = 40,
           n_cols: int | None = None) -> None:
    """A grid of images (rows of columns, or wrapped at n_cols), each image up to
    max(cell_px, MIN_CELL_PX) wide (8 x 8 digits enlarged by nearest neighbour) and
    narrower only where the page is (``figures.image_grid``)."""
    st.html(figures.image_grid(imgs, row_labels=row_labels, col_labels=col_labels, title=title,
                               cell_px=max(cell_px, MIN_CELL_PX), n_cols=n_cols))


def image_input(key: str, max_mb: int) -> tuple[bytes, str] | None:
    """An image file's bytes and name: uploaded or, where the maintained component
    streamlit-drawable-canvas is installed, drawn in the browser (white on black, like
    the datasets); None until there is one."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except ImportError:
        st_canvas = None
    how = "Upload a file"
    if st_canvas is not None:
        how = st.radio("Your image", ["Upload a file", "Draw one"], horizontal=True,
                       key=f"{key}.how", help="Draw with the mouse; the canvas's toolbar "
                       "undoes or clears.")
    if how == "Upload a file":
        up = st.file_uploader("A PNG or JPEG of one digit or garment",
                              type=["png", "jpg", "jpeg"], max_upload_size=max_mb,
                              key=f"{key}.file")
        if st_canvas is None:
            st.caption("Drawing in the browser needs the streamlit-drawable-canvas package.")
        return (up.getvalue(), up.name) if up is not None else None
    st.space("medium")  # room for the toolbar the canvas floats above itself
    res = st_canvas(stroke_width=24, stroke_color="#ffffff", background_color="#000000",
                    width=280, height=280, return_image_data=True, key=f"{key}.canvas")
    drawn = bool((res.json_data or {}).get("objects"))
    return (res.image_bytes, "drawing.png") if drawn and res.image_bytes else None


def class_name(data: Dataset, c: int) -> str:
    return data.class_names[int(c)] if 0 <= int(c) < len(data.class_names) else str(c)


# ----------------------------------------------------------------------------- colours

def colour_choices(model: LatentModel, enc: dict) -> list[str]:
    out = ["true class"]
    if enc.get("predicted") is not None:
        out.append("predicted class")
    out.append("k-means cluster")
    if enc.get("leaf") is not None:
        out.append("TreeVAE leaf")
    elif enc.get("cluster") is not None:
        out.append("model's own cluster")
    return out


def colour_labels(choice: str, enc: dict, data: Dataset, kmeans_labels=None
                  ) -> tuple[np.ndarray, list[str] | None, str]:
    """(label per test image, names of the label values or None, legend title)."""
    if choice == "true class":
        return enc["y"], list(data.class_names), "class"
    if choice == "predicted class":
        return enc["predicted"], list(data.class_names), "predicted"
    if choice == "TreeVAE leaf":
        leaves = np.unique(enc["leaf"])
        return np.searchsorted(leaves, enc["leaf"]), [f"leaf {n}" for n in leaves], "leaf"
    if choice == "model's own cluster":
        return enc["cluster"], None, "cluster"
    return kmeans_labels, None, "k-means"


def coordinates_csv(ids: np.ndarray, xy: np.ndarray, enc: dict, data: Dataset,
                    colour: np.ndarray, colour_title: str) -> bytes:
    df = pd.DataFrame({"test_index": ids, "x": xy[:, 0], "y": xy[:, 1],
                       "true_class": enc["y"][ids],
                       "true_name": [class_name(data, c) for c in enc["y"][ids]]})
    for k in ("predicted", "cluster", "leaf"):
        if enc.get(k) is not None:
            df[k] = enc[k][ids]
    df[f"colour_{colour_title}"] = colour[ids]
    return df.to_csv(index=False).encode("utf-8")


# ----------------------------------------------------------------------------- selections

def kept_selection(key: str, points, look, event=None) -> np.ndarray:
    """The ids selected on a map, kept while only its look (colouring) changes.

    Streamlit resets a chart's selection whenever the figure changes, so recolouring
    would drop it. ``points`` names what places the points (checkpoint, method, n, seed),
    ``look`` the rest. Called without ``event`` before drawing (the ids to show as
    selected), then with the chart's event: a new points key resets the selection; a new
    look keeps it; otherwise a changed event is the user's new selection."""
    store = st.session_state.setdefault(f"{key}.selection", {
        "points": None, "look": None, "ids": np.zeros(0, np.int64), "seen": None})
    if event is None:
        return store["ids"] if store["points"] == points else np.zeros(0, np.int64)
    got = figures.selected_ids(event)
    seen = tuple(got.tolist())
    if store["points"] != points:
        store["ids"] = got
    elif store["look"] == look and seen != store["seen"]:
        store["ids"] = got
    store.update(points=points, look=look, seen=seen)
    return store["ids"]


def projection(entry: Entry, method: str, n: int, seed: int):
    """``cache.projection`` with its progress drawn in a placeholder that is emptied when
    it returns: a finished bar (or one replayed from the cache) never stays on the page
    in the place of a result."""
    slot = st.empty()
    with slot.container():
        out = cache.projection(entry, method, n, seed)
    slot.empty()
    return out


def axis_titles(proj) -> tuple[str, str]:
    """The map's axis titles: principal components with their share of the variance for
    PCA; t-SNE 1/2 or UMAP 1/2 (no units: only neighbourhoods mean something)."""
    from ..projections import METHOD_LABELS

    if proj.method == "pca":
        r = proj.params.get("explained_variance_ratio")
        if r is not None and len(r) >= 2:
            return (f"PC 1 ({float(r[0]):.0%} of variance)", f"PC 2 ({float(r[1]):.0%})")
        return ("PC 1", "PC 2")
    label = METHOD_LABELS.get(proj.method, proj.method)
    return (f"{label} 1", f"{label} 2")


# ----------------------------------------------------------------------------- projection controls

_WRITTEN = "lv_url.written"   # {param: the value this session last put in the URL}


def from_url(key: str, name: str, cast, default, ok=lambda v: True) -> bool:
    """Seed the widget ``key`` from the URL's ``?name=`` on its first draw, else from
    ``default``; a malformed or unknown value gets a short message and the default.
    The widget is then drawn without a value argument. Returns whether a link's value
    was taken (on this draw)."""
    if key in st.session_state:
        return False
    value, linked = default, False
    raw = st.query_params.get(name)
    # Only what this session did not write there itself: a link opened, an address typed.
    if raw is not None and raw != st.session_state.get(_WRITTEN, {}).get(name):
        try:
            got = cast(raw)
            if not ok(got):
                raise ValueError
            value, linked = got, True
        except (TypeError, ValueError, KeyError, StopIteration):
            st.toast(f"Ignored {name}={str(raw)[:40]!r} in the link: showing the default.")
    st.session_state[key] = value
    return linked


def to_url(**values) -> None:
    """Mirror a view's controls in the URL, so the address is a link to this view."""
    written = st.session_state.setdefault(_WRITTEN, {})
    for name, v in values.items():
        st.query_params[name] = written[name] = str(v)


def projection_controls(n_total: int, key: str, default_n: int = 2000,
                        method: str = "pca") -> tuple[str, int, int]:
    """Method, sample size and seed pickers in one row, seeded from and mirrored in the
    URL (``?method=tsne&n=10000&seed=0``)."""
    from ..projections import METHOD_LABELS, METHODS

    lo = min(10, n_total)
    from_url(f"{key}.method", "method", str, method, lambda v: v in METHODS)
    from_url(f"{key}.n", "n", int, min(default_n, n_total), lambda v: lo <= v <= n_total)
    from_url(f"{key}.seed", "seed", int, 0, lambda v: 0 <= v < 2 ** 31)
    c1, c2, c3 = st.columns([2, 2, 1])
    method = c1.radio("Projection", METHODS, horizontal=True, format_func=METHOD_LABELS.get,
                      key=f"{key}.method")
    n = int(c2.number_input(f"Sample size (of {n_total} test images)", lo, n_total, step=100,
                            key=f"{key}.n"))
    seed = int(c3.number_input("Seed", 0, 2 ** 31 - 1, key=f"{key}.seed",
                               help="Fixes the sample and the projection's randomness."))
    to_url(method=method, n=n, seed=seed)
    return method, n, seed


# ----------------------------------------------------------------------------- training view

def show_training(snap) -> None:
    """Progress bar, live loss curves and the outcome of a training job."""
    st.progress(min(max(snap.fraction, 0.0), 1.0), text=f"{snap.message} · {snap.seconds:.0f} s")
    if snap.train:
        st.plotly_chart(figures.loss_curves(snap.train, snap.test), key=None)
    if snap.status == "failed":
        st.error(f"Training failed: {snap.error}")
    elif snap.result:
        r = snap.result
        verb = "Stopped early" if snap.status == "stopped" else "Finished"
        st.success(f"{verb} after {r['epochs']} epochs in {r['seconds']:.0f} s; saved "
                   f"`{r['path']}`. It is now in every page's checkpoint list.")
        st.dataframe(figures.metrics_table([{"name": state.Path(r["path"]).stem, **r}]),
                     hide_index=True)
