"""Samples: images decoded from chosen places in latent space. Each tab is a fragment, so
its sliders only re-decode, never re-encode or re-project."""
import numpy as np
import streamlit as st
import torch

from latentviz import figures, sampling, ui
from latentviz.models import VARIANTS
from latentviz.ui import cache

st.title("Samples")
ui.sidebar()
entry, model, data = ui.require_model()
enc = ui.encoded_for(entry)
name = lambda c: ui.widgets.class_name(data, c)  # noqa: E731
# The tab and each tab's settings live in the URL (?tab=Traversal&sm.t.span=5): a link
# opens the same view.
tabs = st.tabs(["Cluster centres", "Class rows", "Interpolation", "Traversal"], key="tab",
               bind="query-params")


@st.fragment
def centres() -> None:
    own = sampling.model_centres(model)
    tree = getattr(model, "tree", None)
    sources = ((["the tree's leaves"] if tree is not None else [])
               + (["the model's own centres"] if own is not None else [])
               + ["k-means on the latent means"])
    c1, c2, c3, c4 = st.columns(4)
    about = ("Rows around each centre, like Figure 6 of the lambda-hot paper (samples around "
             "the k-means prior's centres). A TreeVAE's rows are its leaves: each drawn from "
             "the tree's generative model down the path to that leaf (Manduchi et al., sec. "
             "2.2).")
    if len(sources) == 1:   # nothing to choose: say where the centres come from
        source = sources[0]
        c1.markdown(f"**Centres**  \n{source}", help=about)
    else:
        source = c1.radio("Centres", sources, help=about)
    tree_rows = source == "the tree's leaves"
    n = int(c2.slider("Samples per row", 4, 16, 10, key="sm.c.n", bind="query-params"))
    spread = c3.slider("Spread", 0.0, 2.0, 1.0, 0.1, key="sm.c.s", bind="query-params",
                       disabled=tree_rows,
                       help="sd of the noise around each centre; 1 = the prior's, as in "
                       "Figure 6. A tree's leaves draw with their own prior's variances.")
    seed = int(c4.number_input("Seed", 0, 2 ** 31 - 1, 0, key="sm.c.seed",
                               bind="query-params"))
    if tree_rows:   # cluster k of the encoded test set is the leaf tree.leaves[k]
        members, row_names = enc["cluster"], [f"leaf {leaf}" for leaf in tree.leaves]
        samples = cache.node_samples(entry.path, entry.mtime, n, seed)
        imgs = torch.stack([samples[leaf] for leaf in tree.leaves])
    elif source.startswith("the model"):
        cen, members = own, enc["cluster"]
    else:
        k = int(c1.number_input("k", 2, 30, data.n_classes, key="sm.c.k", bind="query-params"))
        cl = cache.latent_kmeans(entry.path, entry.mtime, k, seed)
        cen, members = cl.centres, cl.labels
    if not tree_rows:
        row_names = [str(i) for i in range(len(cen))]
    counts = [np.bincount(enc["y"][members == i], minlength=data.n_classes)
              for i in range(len(row_names))]
    major = [int(np.argmax(c)) for c in counts]
    if not tree_rows:
        imgs = sampling.centre_samples(model, cen, n, std=spread, seed=seed,
                                       y=major if model.conditional else None)
    rows = [f"{r}: {c.sum()} imgs, {c.max() / max(c.sum(), 1):.0%} '{name(m)}'"
            for r, c, m in zip(row_names, counts, major)]
    ui.images(imgs, row_labels=rows, cell_px=44)
    if tree_rows:
        st.caption("Each row: images the tree generates at one leaf (z drawn from the prior "
                   "down the root-to-leaf path), labelled with the test images routed there "
                   "and their most common class, as on the TreeVAE page.")
    if model.conditional:
        st.caption("The conditional VAE decodes each row with its cluster's majority class.")


@st.fragment
def class_rows() -> None:
    ents = sorted((e for e in ui.usable() if sampling.samples_by_class(e.variant)),
                  key=lambda e: e.dataset != entry.dataset)  # this dataset's models first
    cond = [e for e in ents if VARIANTS[e.variant].cls.conditional]
    prior = [e for e in ents if e not in cond]
    if not ents:
        st.info("Class rows need a conditional VAE or a lambda-hot VAE: train one on the Train page.")
        return
    c1, c2 = st.columns(2)
    n = int(c1.slider("Samples per class", 4, 16, 6, key="sm.r.n", bind="query-params"))
    seed = int(c2.number_input("Seed", 0, 2 ** 31 - 1, 0, key="sm.r.seed", bind="query-params"))
    st.caption("Each row is `model.sample(n, y=class)`: Figures 4 and 5 of the lambda-hot paper "
               "put a conditional VAE's rows (left) beside the lambda-hot VAE's (right).")
    for col, group, title in zip(st.columns(2), (cond, prior), ("Conditional", "Class prior")):
        with col:
            if not group:
                st.info(f"No {title.lower()} checkpoint yet.")
                continue
            # Keyed by the current checkpoint, which is the default where it fits.
            at = next((i for i, g in enumerate(group) if g.path == entry.path), 0)
            e = st.selectbox(title, group, format_func=lambda e: e.label, index=at,
                             key=f"sm.r.{title}.{entry.path}")
            m, d = ui.load(e)
            imgs = sampling.class_rows(m, n, seed=seed)
            ui.images(imgs, row_labels=list(d.class_names), cell_px=32)


def pick_image(label: str, default: int, key: str) -> int:
    i = int(st.number_input(label, 0, len(enc["y"]) - 1, default, key=key, bind="query-params"))
    st.caption(f"test image {i}: class '{name(enc['y'][i])}'")
    return i


@st.fragment
def interpolation() -> None:
    c1, c2, c3 = st.columns(3)
    with c1:
        a = pick_image("From test image", 0, "sm.i.a")
    with c2:
        b = pick_image("To test image", 1, "sm.i.b")
    steps = int(c3.slider("Steps", 3, 15, 9, key="sm.i.steps", bind="query-params"))
    x, y = data.x_test, data.y_test
    imgs = sampling.interpolate(model, x[a], x[b], steps, y_a=y[a], y_b=y[b])
    ui.images(imgs, col_labels=[f"{t:.2f}" for t in np.linspace(0, 1, steps)], cell_px=48,
              title="z(t) = (1 - t) mu(a) + t mu(b)")


@st.fragment
def traversal() -> None:
    d = model.config.latent_dim
    act = cache.latent_activity(entry.path, entry.mtime)
    order = [int(u) for u in np.argsort(-act.variance)]   # the most active first
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        i = pick_image("Test image", 0, "sm.t.i")
    dim = int(c2.selectbox(
        "Latent dimension", order, key=f"sm.t.dim.{entry.path}",
        format_func=lambda u: f"{u}  (KL {act.kl[u]:.2f}" + (")" if act.active[u] else
                                                             ", inactive)"),
        help="Most active first. Unit u is active if the variance over test images of its "
             "posterior mean exceeds 0.01 (Burda et al. 2016); an inactive one carries no "
             "information, so moving along it changes nothing."))
    span = float(c3.slider("Span (+/-)", 0.5, 10.0, 3.0, 0.5, key="sm.t.span",
                           bind="query-params"))
    steps = int(c4.slider("Steps", 3, 15, 9, key="sm.t.steps", bind="query-params"))
    st.caption(f"{act.n_active} of {d} latent dimensions are active (KL per image "
               f"{act.kl.sum():.2f} nats)." + ("" if act.active[dim] else
                                                f" Dimension {dim} is inactive: its images "
                                                "are all alike, as expected."))
    imgs = sampling.traverse(model, data.x_test[i], dim, span=span, steps=steps, y=data.y_test[i])
    offs = np.linspace(-span, span, steps)
    ui.images(imgs, col_labels=[f"{v:+.1f}" for v in offs], cell_px=56,
              title=f"mu(x) + v e_{dim}")
    st.plotly_chart(figures.latent_activity(act.kl, act.active), config=ui.widgets.NO_CHART_BAR)


for tab, section in zip(tabs, (centres, class_rows, interpolation, traversal)):
    with tab:
        section()
