"""Compare: several checkpoints side by side with the same projection and seed (the
lambda-hot paper's Figures 2 and 3), their samples, and a metrics table (its Table 1)."""
import streamlit as st

from latentviz import figures, projections, sampling, ui
from latentviz.models import VARIANTS
from latentviz.ui import cache

st.title("Compare")
ui.sidebar()
ents = ui.usable()
if not ents:
    st.info("No checkpoint yet: train one on the Home or Train page.")
    st.stop()
cur = ui.current() or ents[0]
# Keyed by the current checkpoint: a new current model gives a new default set.
by_name = {e.name: e for e in reversed(ents)}   # a name yours and shipped: yours
ui.widgets.from_url(f"cmp.set.{cur.path}", "compare",
                    lambda v: [by_name[n] for n in v.split(",")],
                    ui.widgets.compare_defaults(ents, cur), lambda v: 0 < len(v) <= 8)
chosen = st.multiselect("Checkpoints", ents, format_func=lambda e: e.label, max_selections=8,
                        key=f"cmp.set.{cur.path}")
ui.widgets.to_url(compare=",".join(e.name for e in chosen))   # ?compare=a,b,c
if not chosen:
    st.info("Pick at least one checkpoint.")
    st.stop()
if len({e.dataset for e in chosen}) > 1:
    st.warning("These checkpoints were trained on different datasets; colours follow each "
               "one's own class numbers.")
loaded = [(e, *ui.load(e)) for e in chosen]
n_min = min(len(d.y_test) for _, _, d in loaded)
# t-SNE by default, as in the paper's Figures 2 and 3.
method, n, seed = ui.projection_controls(n_min, key="cmp", default_n=1000, method="tsne")

aligned = st.toggle("Align the maps", value=True, key="cmp.align",
                    help="Rotate, reflect, scale and shift each map onto the first on the test "
                         "images they share (orthogonal Procrustes), so a class sits in the "
                         "same place in every panel. Off: each map as its method drew it.")
panels, ref = [], None
for e, m, d in loaded:
    ids, proj = ui.projection(e, method, n, seed)
    xy = proj.embedding
    if aligned and ref is not None:
        try:
            xy, _ = projections.align(xy, ids, *ref)
        except ValueError:   # too few shared test images (different datasets)
            pass
    ref = ref or (proj.embedding, ids)
    panels.append({"title": f"{e.name}<br>{VARIANTS[e.variant].title}", "xy": xy,
                   "labels": ui.encoded_for(e)["y"][ids]})
fig = figures.scatter_panels(panels, label_names=loaded[0][2].class_names,
                             cols=2 if len(panels) == 4 else min(len(panels), 3))
st.plotly_chart(fig, config={"displaylogo": False})
stem = f"compare-{method}-n{n}-seed{seed}"
why_not = cache.png_export_available()
if why_not is None:
    st.download_button("Download the maps (PNG)", lambda: figures.figure_png(fig),
                       file_name=f"{stem}.png", mime="image/png", on_click="ignore")
else:
    st.download_button("Download the maps (interactive HTML)", figures.figure_html(fig),
                       file_name=f"{stem}.html", mime="text/html", on_click="ignore")
    st.caption(f"PNG export is unavailable here ({why_not}); the HTML file opens offline.")


@st.fragment
def samples() -> None:
    st.subheader("Samples")
    c1, c2 = st.columns(2)
    k = int(c1.slider("Samples per model", 8, 48, 24, 8, key="cmp.k"))
    s = int(c2.number_input("Seed", 0, 2 ** 31 - 1, 0, key="cmp.s"))
    cols = st.columns(min(len(loaded), 2))  # two a row: 6 images of 56 px fit a column
    for i, (e, m, d) in enumerate(loaded):
        imgs = sampling.random_samples(m, k, seed=s)
        with cols[i % len(cols)]:
            ui.images(imgs, n_cols=6, cell_px=36, title=e.name)
            st.download_button("PNG", figures.mosaic_png(imgs, n_cols=6), key=f"cmp.png.{i}",
                               file_name=f"{e.name}-samples-seed{s}.png", mime="image/png",
                               on_click="ignore")


samples()
st.subheader("Metrics")
table = figures.metrics_table([{"name": e.name, "variant": e.variant, "dataset": e.dataset,
                                "epochs": e.epochs, "metrics": e.metrics} for e in chosen])
ui.widgets.metrics_dataframe(table, key="cmp.columns", shown=9, help_text=(
    "Test set. recon/KL/loss: per image (lower is better); accuracies of classifiers "
    "fitted on train-set latent means; ACC/NMI/ARI of k-means (k = classes) on them; "
    "active: latent units in use (Burda et al. 2016)."))
st.download_button("Download the table (CSV)", table.to_csv(index=False).encode(),
                   file_name="compare-metrics.csv", mime="text/csv", on_click="ignore")
