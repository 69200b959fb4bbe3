"""Latent space: the test set's latent means of one checkpoint, projected to 2-D; select
points (box or lasso) to see their images, reconstructions and class counts. The decoded
map draws images decoded across the map under the points (Kingma & Welling 2014, Fig. 4,
through the projection's inverse); a box over an empty place decodes its centre, two
boxes the path between them."""
import numpy as np
import streamlit as st
import torch

from latentviz import decoded_map, figures, projections, ui
from latentviz.projections import METHOD_LABELS
from latentviz.ui import cache

st.title("Latent space")
ui.sidebar()
entry, model, data = ui.require_model()
enc = ui.encoded_for(entry)
n_total = len(enc["y"])

method, n, seed = ui.projection_controls(n_total, key="ls")
c1, c2, c3 = st.columns([2, 1, 2])
colours = ui.colour_choices(model, enc)
ui.widgets.from_url("ls.colour", "colour", str, colours[0], lambda v: v in colours)
choice = c1.selectbox("Colour by", colours, key="ls.colour")
ui.widgets.from_url("ls.grid", "grid", int, 0, lambda v: 0 <= v <= 16)
grid = int(c3.slider("Decoded map (images per side; 0 = off)", 0, 16, key="ls.grid",
                     help="Images decoded at a grid of places over the map, under the points: "
                          "the learned manifold. PCA inverts exactly, UMAP by umap-learn's "
                          "inverse, t-SNE approximately (the nearest points' latents)."))
ui.widgets.to_url(colour=choice, grid=grid)
km, k = None, None
if choice == "k-means cluster":
    k = int(c2.number_input("k (clusters)", 2, 50, data.n_classes, help="k-means with this "
                            "seed on all test-set latent means"))
    km = cache.latent_kmeans(entry.path, entry.mtime, k, seed).labels
labels, names, legend = ui.colour_labels(choice, enc, data, km)

ids, proj = ui.projection(entry, method, n, seed)
xy = proj.embedding
aligned = None   # t-SNE / UMAP of another seed, turned onto the seed-0 map
if seed != 0 and method != "pca" and not grid and c2.toggle(
        "Align to the seed-0 map", value=True, key="ls.align",
        help="t-SNE and UMAP maps of other seeds come out rotated or mirrored: this turns "
             "the map onto the seed-0 one (orthogonal Procrustes on the shared points), "
             "so a class stays where it was. Off while the decoded map is shown."):
    ref_ids, ref = ui.projection(entry, method, n, 0)
    xy, aligned = projections.align(xy, ids, ref.embedding, ref_ids)
params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in proj.params.items() if k not in ("n_components",
                                                                "explained_variance_ratio"))
st.caption(f"**{len(ids)}** of {n_total} test images · {METHOD_LABELS[method]} ({params}) · "
           f"seed **{seed}** · {entry.label}. Drag a box or lasso to select points; a box "
           "also decodes the place at its centre, and a second box (shift-drag) the path "
           "between the two.")
if method == "pca" and getattr(model, "tree", None) is not None:
    st.caption("A TreeVAE's point is its path's latents, depth by depth: images on different "
               "paths hold different nodes' z in the same coordinates, so a linear map mixes "
               "what the tree separates. t-SNE or UMAP (which keep neighbours) and colouring "
               "by TreeVAE leaf show its clusters; the TreeVAE page shows the tree.")
hover = [ui.widgets.class_name(data, c) for c in enc["y"][ids]]
# The selection is kept across a change of colouring (the points stay where they are).
selected = ui.widgets.kept_selection("ls", (entry.path, method, n, seed), (choice, k))
fig = figures.latent_scatter(xy, labels[ids], ids, label_names=names, legend_title=legend,
                             hover=[f"true: {h}" for h in hover],
                             axis_titles=ui.widgets.axis_titles(proj),
                             clusters=choice not in ("true class", "predicted class"),
                             selected=selected)
y_map = enc["y"][ids]
if grid:
    dec = decoded_map.decoded_grid(model, proj, grid, labels=y_map)
    fig.update_traces(marker={"opacity": 0.55, "size": 4}, selector={"type": "scattergl"})
    fig.update_layout(plot_bgcolor="black",
                      title=f"Decoded map, {grid} x {grid} images: {dec.label}")
    figures.add_decoded_map(fig, dec, cell_px=max(28, 560 // grid))
event = st.plotly_chart(fig, on_select="rerun", selection_mode=figures.SELECTION_MODES,
                        key="ls.scatter")
selected = ui.widgets.kept_selection("ls", (entry.path, method, n, seed), (choice, k), event)
boxes = figures.selected_boxes(event)
if boxes:
    centres = np.array([[(b[0] + b[1]) / 2, (b[2] + b[3]) / 2] for b in boxes[:2]])
    if aligned is not None:    # places on the shown map -> the projection's own frame
        centres = aligned.inverse(centres)
    if len(centres) == 1:
        at = decoded_map.decode_at(model, proj, centres, labels=y_map)
        near = ids[at.nearest[0]]
        st.subheader("Decoded at the box's centre")
        ui.images(torch.cat([at.images, data.x_test[torch.as_tensor(near)]]),
                  col_labels=["decoded"] + [ui.widgets.class_name(data, c)
                                            for c in enc["y"][near]])
        st.caption(f"The box's centre decoded through the map's inverse ({at.label}), and "
                   f"the {len(near)} test images nearest to it on the map.")
    else:
        path = decoded_map.decoded_path(model, proj, centres[0], centres[1], steps=10,
                                        labels=y_map)
        st.subheader("Decoded along the map from the first box to the second")
        ui.images(path.images, col_labels=[f"{t:.1f}" for t in np.linspace(0, 1, 10)])
        st.caption(f"10 places on the straight line between the boxes' centres, decoded "
                   f"through the map's inverse ({path.label}).")
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
                  title=f"{len(pick)} of {len(selected)} selected" if i == 0 else "")
    st.plotly_chart(figures.class_counts(enc["y"][selected], data.class_names,
                                         title="true classes in the selection"))


show_selection(selected)
