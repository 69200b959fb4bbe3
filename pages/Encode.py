"""Encode your image: an uploaded (or drawn) picture, resized like the dataset, encoded,
placed on the latent map, reconstructed, and classified where the variant can classify."""
import numpy as np
import streamlit as st
import torch

from latentviz import figures, sampling, ui
from latentviz.data import prepare_image
from latentviz.ui.upload import MAX_BYTES, UploadError, read_upload

st.title("Encode your image")
ui.sidebar()
entry, model, data = ui.require_model()
c, h, w = data.image_shape
st.caption(f"{entry.label}: images are resized to {h}x{w}, grey, light on dark, like "
           f"{entry.dataset}. A dark-on-light picture is inverted automatically.")
got = ui.widgets.image_input("enc", max_mb=MAX_BYTES // 2 ** 20)
c1, c2 = st.columns(2)
invert = c1.radio("Invert", ["auto", "yes", "no"], horizontal=True, key="enc.invert",
                  help="auto: invert when the border is brighter than the centre.")
y = None
if model.conditional:
    y = int(c2.selectbox("Class (the conditional VAE encodes with its label)",
                         range(data.n_classes), format_func=lambda i: data.class_names[i]))
if got is None:
    st.info("Upload or draw an image to see where it lands.")
    st.stop()
try:
    arr = read_upload(*got)
except UploadError as exc:
    st.error(str(exc))
    st.stop()

x = prepare_image(arr, data.image_shape, invert={"auto": None, "yes": True, "no": False}[invert])
z = sampling.encode_mean(model, x, y)                     # (1, D)
with torch.no_grad():
    recon = model.reconstruct(x.to(model.device), None if y is None else
                              torch.tensor([y], device=model.device)).cpu()
enc = ui.encoded_for(entry)
near = np.argsort(((enc["z"] - z.numpy()) ** 2).sum(1))[:8]

a, b = st.columns([1, 3])
a.image(arr, caption=f"your image ({arr.shape[1]}x{arr.shape[0]})", width=160, clamp=True)
with b:
    ui.images(torch.stack([x[0], recon[0]])[None], col_labels=["as the model sees it",
                                                                "reconstruction"], cell_px=96)
if model.can_classify:
    with torch.no_grad():
        pred = int(model.predict(x.to(model.device)).cpu()[0])
    st.metric("Predicted class", data.class_names[pred])
else:
    votes = np.bincount(enc["y"][near], minlength=data.n_classes)
    st.caption(f"{entry.variant} does not classify; its 8 nearest test images in latent space "
               f"are mostly '{data.class_names[int(votes.argmax())]}'.")
ui.images(data.x_test[torch.as_tensor(near)], cell_px=36, title="nearest test images in "
          "latent space", col_labels=[data.class_names[int(c)] for c in enc["y"][near]])

st.subheader("On the latent map")
method, n, seed = ui.projection_controls(len(enc["y"]), key="enc", default_n=2000)
ids, proj = ui.projection(entry, method, n, seed)
xy_new = proj.transform(z.numpy())
fig = figures.latent_scatter(proj.embedding, enc["y"][ids], ids, label_names=data.class_names,
                             extra={"xy": xy_new, "name": "your image"})
st.plotly_chart(fig, key="enc.map")
st.caption(f"{len(ids)} test images, seed {seed}; your image is the star "
           f"({'openTSNE transform' if method == 'tsne' else 'the fitted map'} places it).")
