"""TreeVAE: the learned tree as a dendrogram (node size = test images routed there, colour =
majority class, bars = leaf class shares); click a node for its samples and images."""
import numpy as np
import streamlit as st
import torch

from latentviz import figures, ui
from latentviz.ui import cache

st.title("TreeVAE")
ui.sidebar()
try:
    from latentviz import tree  # noqa: F401 - present once TreeVAE is installed
except ImportError:
    st.info("TreeVAE is not part of this installation.")
    st.stop()

ents = [e for e in ui.usable() if e.variant == "treevae"]
if not ents:
    st.info("No TreeVAE checkpoint yet: train one on the Train page (variant *TreeVAE*).")
    st.stop()
cur = ui.current()
# The current checkpoint if it is a tree, else a tree on its dataset; picking a tree here
# makes it the current checkpoint of every page.
ents.sort(key=lambda e: cur is None or e.dataset != cur.dataset)
at = next((i for i, e in enumerate(ents) if cur and e.path == cur.path), 0)
pick_key = f"tv.pick.{cur.path if cur else ''}"
linked = ui.widgets.from_url(pick_key, "tree", lambda v: next(e for e in ents if e.name == v),
                             ents[at])
if linked and (cur is None or st.session_state[pick_key].path != cur.path):
    # A link's ?tree= is a pick too: the tree it names becomes every page's checkpoint,
    # also when it is the tree this page would have shown anyway.
    ui.widgets.make_current(pick_key)
    st.rerun()
entry = st.selectbox("TreeVAE checkpoint", ents, format_func=lambda e: e.label,
                     key=pick_key, on_change=ui.widgets.make_current, args=(pick_key,))
if cur is not None and cur.variant != "treevae":
    st.caption(f"The current checkpoint, {cur.name}, is not a TreeVAE: showing {entry.name}"
               + (f", a tree on {cur.dataset}." if entry.dataset == cur.dataset else "."))
model, data = ui.load(entry)
table = cache.tree_table(entry.path, entry.mtime)
m = cache.tree_metrics(entry.path, entry.mtime)
# Short names first, so a narrow column cuts the explanation, not the name.
for col, (key, label, about) in zip(st.columns(4), [
        ("dp", "DP (dendrogram purity)", "For two test images of the same class, the share "
         "of their lowest common node's images that have that class, averaged over all "
         "such pairs (the TreeVAE paper's Table 1 measure)"),
        ("lp", "LP (leaf purity)", "The share of each leaf's test images in its majority "
         "class, weighted by the leaf's size"),
        ("leaf_acc", "Leaf ACC", "Accuracy with each leaf matched to one class (Hungarian)"),
        ("leaf_nmi", "Leaf NMI", "Normalised mutual information between leaves and classes")]):
    col.metric(label, f"{m[key]:.3f}" if isinstance(m.get(key), float) else "n/a", help=about)
st.caption(f"{tree.leaf_count_text(table)}; {len(table)} nodes, test set of "
           f"{len(data.y_test)} images. Click a node (or pick it below) to see inside it.")

# Does the tree beat the simple alternative? A plain VAE's test latents, Ward-clustered and
# cut to this tree's number of leaves (the TreeVAE paper's "VAE + Agg"), on demand.
vae, n_leaves = cache.baseline_vae(entry), sum(n["is_leaf"] for n in table)
if vae is None:
    st.caption("No plain VAE checkpoint on these test images to compare the tree with.")
elif st.toggle(f"Beside a VAE + Ward baseline ({vae.name}, cut to {n_leaves} leaves)",
               key="tv.baseline", help="Ward's agglomerative clustering of the VAE's test "
               "latent means, its merge tree cut to this tree's leaves, scored the same way"):
    b = cache.ward_baseline(vae.path, vae.mtime, n_leaves)
    pairs = [(m.get(t, float("nan")), b[k]) for t, k in
             (("dp", "dp"), ("lp", "lp"), ("leaf_acc", "acc"), ("leaf_nmi", "nmi"))]
    st.dataframe({"Method": ["TreeVAE", f"VAE + Ward ({vae.name})"],
                  **{c: [round(t, 3), round(w, 3)] for c, (t, w) in zip(("DP", "LP", "ACC", "NMI"), pairs)}},
                 hide_index=True)
    st.caption(f"The tree scores higher on {sum(t > w for t, w in pairs)} of the 4; same "
               f"{len(data.y_test)} test images, {n_leaves} leaves each.")

nodes = {n["id"]: n for n in table}
# Node state per tree: another tree's node 12 is another node.
k_chart, k_node, k_clicked = (f"tv.{w}.{entry.path}" for w in ("tree", "node", "clicked"))
clicked = figures.selected_ids(st.session_state.get(k_chart))
clicked = [int(c) for c in clicked if int(c) in nodes]
if clicked and st.session_state.get(k_clicked) != clicked[0]:
    st.session_state[k_clicked] = st.session_state[k_node] = clicked[0]
ui.widgets.from_url(k_node, "node", int, table[0]["id"], lambda v: v in nodes)
if st.session_state.get(k_node) not in nodes:
    st.session_state[k_node] = table[0]["id"]
kind = lambda i: "leaf" if nodes[i]["is_leaf"] else "node"  # noqa: E731
node = st.selectbox("Node", list(nodes), key=k_node,
                    format_func=lambda i: f"{kind(i)} {i} ({nodes[i]['n_samples']} test images)")
ui.widgets.to_url(tree=entry.name, node=node)   # ?tree=mnist-treevae&node=12
st.plotly_chart(figures.tree_figure(table, label_names=data.class_names, selected=node),
                on_select="rerun", selection_mode="points", key=k_chart)


@st.fragment
def node_details(node: int) -> None:
    c1, c2 = st.columns(2)
    n = int(c1.slider("Samples per node", 4, 16, 8, key="tv.n"))
    seed = int(c2.number_input("Seed", 0, 2 ** 31 - 1, 0, key="tv.seed"))
    samples = cache.node_samples(entry.path, entry.mtime, n, seed)
    st.subheader(f"{kind(node).capitalize()} {node}")
    ui.images(samples[node], title="generated from this node", cell_px=40)
    mask = cache.node_mask(entry.path, entry.mtime, node)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        st.caption("No test image is routed through this node.")
    else:
        pick = torch.as_tensor(idx[:16])
        x = data.x_test[pick]
        with torch.no_grad():
            recon = model.reconstruct(x.to(model.device)).cpu()
        for i in range(0, len(x), 8):   # each test image above its reconstruction
            ui.images(torch.stack([x[i:i + 8], recon[i:i + 8]]), row_labels=["test", "recon"],
                      title=f"test images routed here ({len(x)} of {len(idx)})" if i == 0
                      else "")
        st.plotly_chart(figures.class_counts(data.y_test[torch.as_tensor(idx)].numpy(),
                                             data.class_names, title="their classes"))
    with st.expander("Generated samples of every node"):
        ids = [t["id"] for t in table]
        ui.images(torch.stack([samples[i] for i in ids]), cell_px=28,
                  row_labels=[f"{kind(i)} {i}" for i in ids])


node_details(node)
