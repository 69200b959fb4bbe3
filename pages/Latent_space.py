"""Latent space: the test set's latent means of one checkpoint, projected to 2-D; select
points (box or lasso) to see their images, reconstructions and class counts."""
import numpy as np
import streamlit as st
import torch

from latentviz import figures, ui
from latentviz.projections import METHOD_LABELS
from latentviz.ui import cache

st.title("Latent space")
ui.sidebar()
entry, model, data = ui.require_model()
enc = ui.encoded_for(entry)
n_total = len(enc["y"])

method, n, seed = ui.projection_controls(n_total, key="ls")
c1, c2 = st.columns([2, 3])
choice = c1.selectbox("Colour by", ui.colour_choices(model, enc))
km, k = None, None
if choice == "k-means cluster":
    k = int(c2.number_input("k (clusters)", 2, 50, data.n_classes, help="k-means with this "
                            "seed on all test-set latent means"))
    km = cache.latent_kmeans(entry.path, entry.mtime, k, seed).labels
labels, names, legend = ui.colour_labels(choice, enc, data, km)

ids, proj = ui.projection(entry, method, n, seed)
xy = proj.embedding
params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in proj.params.items() if k not in ("n_components",
                                                                "explained_variance_ratio"))
st.caption(f"**{len(ids)}** of {n_total} test images · {METHOD_LABELS[method]} ({params}) · "
           f"seed **{seed}** · {entry.label}. Drag a box or lasso to select points.")
hover = [ui.widgets.class_name(data, c) for c in enc["y"][ids]]
# The selection is kept across a change of colouring (the points stay where they are).
selected = ui.widgets.kept_selection("ls", (entry.path, method, n, seed), (choice, k))
fig = figures.latent_scatter(xy, labels[ids], ids, label_names=names, legend_title=legend,
                             hover=[f"true: {h}" for h in hover],
                             axis_titles=ui.widgets.axis_titles(proj),
                             clusters=choice not in ("true class", "predicted class"),
                             selected=selected)
event = st.plotly_chart(fig, on_select="rerun", selection_mode=figures.SELECTION_MODES,
                        key="ls.scatter")
selected = ui.widgets.kept_selection("ls", (entry.path, method, n, seed), (choice, k), event)
st.download_button("Download coordinates and labels (CSV)",
                   ui.coordinates_csv(ids, xy, enc, data, labels, legend),
                   file_name=f"{entry.name}-{method}-n{len(ids)}-seed{seed}.csv", mime="text/csv",
                   on_click="ignore")


@st.fragment
def show_selection(selected: np.ndarray) -> None:
    st.subheader(f"Selection: {len(selected)} images")
    if len(selected) == 0:
        st.caption("Nothing selected yet: use the box or lasso tool on the map.")
        return
    shown = int(st.slider("Images shown", 4, 96, min(32, max(4, len(selected))), step=4))
    pick = selected[:shown]
    x = data.x_test[torch.as_tensor(pick)]
    y = data.y_test[torch.as_tensor(pick)]
    with torch.no_grad():
        recon = model.reconstruct(x.to(model.device), y.to(model.device)
                                  if model.conditional else None).cpu()
    # Each original above its reconstruction, eight pairs a row.
    pairs = torch.stack([x, recon], 1)                              # (k, 2, C, H, W)
    for i in range(0, len(pick), 8):
        ui.images(pairs[i:i + 8].transpose(0, 1), row_labels=["original", "reconstruction"],
                  title=f"{len(pick)} of {len(selected)} selected" if i == 0 else "",
                  key=f"ls.sel.{i}")
    st.plotly_chart(figures.class_counts(enc["y"][selected], data.class_names,
                                         title="true classes in the selection"))


show_selection(selected)
