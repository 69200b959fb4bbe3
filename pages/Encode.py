"""Encode your image: an uploaded (or drawn) picture, prepared the way the dataset's
images were made (latentviz.preprocess), encoded, placed on the latent map,
reconstructed and classified, with a flag when it is unlike the training data."""
import numpy as np
import streamlit as st
import torch

from latentviz import figures, preprocess, sampling, ui
from latentviz.metrics import recon_errors
from latentviz.ui import cache
from latentviz.ui.upload import MAX_BYTES, UploadError, read_upload

st.title("Encode your image")
ui.sidebar()
entry, model, data = ui.require_model()
c, h, w = data.image_shape
how = preprocess.PROCEDURES.get(entry.dataset, (None, f"resized to {h}x{w}"))[1]
st.caption(f"{entry.label}: your picture is made light on dark, its background removed and "
           f"{how}, as the {entry.dataset} images were.")
got = ui.widgets.image_input("enc", max_mb=MAX_BYTES // 2 ** 20)
c1, c2 = st.columns(2)
invert = c1.radio("Invert", ["auto", "yes", "no"], horizontal=True, key="enc.invert",
                  help="auto: invert when the border (the paper) is brighter than mid-grey.")
y = None
if model.conditional:
    y = int(c2.selectbox("Class (the conditional VAE encodes with its label)",
                         range(data.n_classes), format_func=lambda i: data.class_names[i]))
if got is None:
    st.info("Upload or draw an image to see where it lands.")
    st.stop()
try:
    arr = read_upload(*got)
    prep = preprocess.prepare_like(arr, entry.dataset, data.image_shape,
                                   invert={"auto": None, "yes": True, "no": False}[invert])
except (UploadError, preprocess.NoInkError) as exc:
    st.error(str(exc))
    st.stop()

x = prep.x
yt = None if y is None else torch.tensor([y])
z = sampling.encode_mean(model, x, y)                     # (1, D)
with torch.no_grad():
    recon = model.reconstruct(x.to(model.device), None if yt is None else
                              yt.to(model.device)).cpu()
enc = ui.encoded_for(entry)
d2 = ((enc["z"] - z.numpy()) ** 2).sum(1)
near = np.argsort(d2)[:8]
vote = np.bincount(enc["y"][np.argsort(d2)[:25]], minlength=data.n_classes) / 25

a, b = st.columns([1, 4])
a.image(arr, caption=f"your image ({arr.shape[1]}x{arr.shape[0]})", width="stretch", clamp=True)
with b:
    ui.images(torch.stack([x[0], recon[0]])[None], col_labels=["as the model sees it",
                                                                "reconstruction"], cell_px=112)
    st.caption("Prepared: " + "; ".join(prep.steps) + ".")

# Unlike the training data? The reconstruction error's percentile among the test images'.
err = float(recon_errors(model, x, yt)[0])
pct = float((cache.test_recon_errors(entry.path, entry.mtime) < err).mean() * 100)
m1, m2, m3 = st.columns(3)
if model.can_classify:
    with torch.no_grad():
        pred = int(model.predict(x.to(model.device)).cpu()[0])
    m1.metric("Predicted class", data.class_names[pred], help="The model's own classifier.")
else:
    m1.metric("Nearest test images say", data.class_names[int(vote.argmax())],
              help=f"{entry.variant} does not classify: the majority of the 25 test images "
                   "nearest in latent space.")
m2.metric("Neighbours agree", f"{vote.max():.0%}",
          help="Share of the 25 nearest test images (latent space) of the leading class.")
m3.metric("Reconstruction error", f"{err:.1f} nats", help="Binary cross-entropy of the "
          "mean reconstruction. Test percentile: the share (%) of the test images that "
          "the model reconstructs better than yours.",
          delta=f"test percentile {pct:.0f}", delta_color="off",
          delta_arrow="off")
if pct >= 99:
    st.warning(f"Unlike the training data: the model reconstructs it worse than {pct:.1f}% "
               "of the test images, so its place on the map and its class mean little.")
st.plotly_chart(figures.class_counts(enc["y"][np.argsort(d2)[:25]], data.class_names,
                                     title="classes of the 25 nearest test images"),
                config=ui.widgets.NO_CHART_BAR)
ui.images(data.x_test[torch.as_tensor(near)], title="the 8 nearest test images in latent space",
          col_labels=[data.class_names[int(c)] for c in enc["y"][near]])

st.subheader("On the latent map")
method, n, seed = ui.projection_controls(len(enc["y"]), key="enc", default_n=2000)
ids, proj = ui.projection(entry, method, n, seed)
xy_new = proj.transform(z.numpy())
fig = figures.latent_scatter(proj.embedding, enc["y"][ids], ids, label_names=data.class_names,
                             extra={"xy": xy_new, "name": "your image"},
                             axis_titles=ui.widgets.axis_titles(proj))
st.plotly_chart(fig, key="enc.map")
st.caption(f"{len(ids)} test images, seed {seed}; your image is the star "
           f"({'openTSNE transform' if method == 'tsne' else 'the fitted map'} places it).")
