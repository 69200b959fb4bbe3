"""latentviz in the browser: ``streamlit run app.py``.

The entry script: page navigation and the Home page. Every page draws the same sidebar
(device, checkpoint picker) with ``ui.sidebar()``. Checkpoints are read from
``$LATENTVIZ_CHECKPOINTS`` (default checkpoints/) and ``$LATENTVIZ_RUNS`` (default runs/,
where the app saves new ones).
"""
import latentviz  # noqa: F401 - first: it sets the OpenMP defaults before torch loads

import streamlit as st

from latentviz import checkpoints, figures, ui
from latentviz.ui import state

st.set_page_config(page_title="latentviz", layout="wide")

HEADLINE = ("test_recon", "test_recon_sse", "test_kl", "active_units", "acc_logreg",
            "kmeans_acc", "acc_own", "kmeans_nmi", "dp", "lp")


def home() -> None:
    st.title("latentviz")
    ui.sidebar()
    st.markdown(
        "latentviz trains variational autoencoders (a plain VAE, beta-VAE, conditional VAE, "
        "the lambda-hot and k-means prior VAEs, branched and fixed-output VAEs, TreeVAE) on "
        "small image datasets and lets you look inside what they learned. "
        "Every test image becomes a point in the model's latent space: the pages map that "
        "space to 2-D, decode images from chosen places in it, and compare how the variants "
        "arrange the classes. "
        "Pick a checkpoint in the sidebar or train your own; a CPU is enough.")
    ents = ui.entries()
    ok = [e for e in ents if e.error is None]
    st.subheader("Checkpoints")
    if not ok:
        st.info("No checkpoint yet. Train a small lambda-hot VAE on the bundled 8x8 digits "
                "(about 10 seconds on a CPU) to see every page working.")
        if st.button("Train a quick digits model", type="primary"):
            train_quick()
    else:
        df = figures.metrics_table([{"name": e.name + (" (yours)" if e.source == "yours" else "")
                                     + (" (collapsed)" if e.collapsed else ""),
                                     "variant": e.variant, "dataset": e.dataset,
                                     "epochs": e.epochs, "metrics": e.metrics} for e in ok],
                                   keys=HEADLINE)
        ui.widgets.metrics_dataframe(df, key="home.columns", shown=8, help_text=(
            f"Yours first (`{state.runs_dir()}`), then the shipped ones "
            f"(`{state.shipped_dir()}`). Test set: recon is binary cross-entropy per image; "
            "accuracies of classifiers on the latent means; active: latent units in use "
            "(Burda et al. 2016); collapsed: the KL is near 0, so the decoder ignores z. "
            "Hover a column header for its full name."))
    for e in ents:
        if e.error:
            st.warning(f"Skipped {e.path}: {e.error}")
    with st.expander("Add a checkpoint file"):
        add_checkpoint()
    st.subheader("Where to start")
    for page, text in WHERE_TO_START:
        st.page_link(page, label=text)


def add_checkpoint() -> None:
    """Upload a checkpoint into the user's folder; the widget is renewed after a success so
    the same file is not stored again on the next rerun."""
    n = st.session_state.setdefault("home.upload.n", 0)
    if msg := st.session_state.pop("home.upload.msg", None):
        st.success(msg)
    up = st.file_uploader("A latentviz .safetensors checkpoint", type=["safetensors"],
                          max_upload_size=64, key=f"home.upload.{n}")
    if up is None:
        return
    try:  # checked completely (it must load and work on every page) before it is stored
        path = checkpoints.store_upload(up.getvalue(), up.name, state.runs_dir())
    except checkpoints.CheckpointError as exc:
        st.error(str(exc))
        return
    except OSError as exc:  # the runs folder cannot be written
        st.error(f"Could not store {up.name} in {state.runs_dir()}: {exc.strerror or exc}")
        return
    st.session_state["home.upload.n"] = n + 1
    st.session_state["home.upload.msg"] = f"Added `{path.name}` to your checkpoints."
    st.session_state[state.SELECT_NEXT] = str(path)
    st.rerun()


def train_quick() -> None:
    bar = st.progress(0.0, text="training")
    try:
        path = ui.training.train_quick(lambda f, msg: bar.progress(f, text=msg))
    except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
        st.error(f"Training failed: {type(exc).__name__}: {exc}")
        return
    st.session_state[state.SELECT_NEXT] = str(path)
    st.rerun()


PAGES = [
    st.Page(home, title="Home", default=True),
    # url paths default to the file names, as in the pages/ folder listing Streamlit shows
    # before this script has run (a custom path would flash "page not found" first).
    # No icons: Material icons are fetched from a font host, and the app stays offline.
    st.Page("pages/Train.py", title="Train"),
    st.Page("pages/Latent_space.py", title="Latent space"),
    st.Page("pages/Samples.py", title="Samples"),
    st.Page("pages/TreeVAE.py", title="TreeVAE"),
    st.Page("pages/Compare.py", title="Compare"),
    st.Page("pages/Encode.py", title="Encode your image"),
]

WHERE_TO_START = [
    (PAGES[2], "Latent space: the test set as a 2-D map; select points to see their images"),
    (PAGES[3], "Samples: decode cluster centres, classes, interpolations, traversals"),
    (PAGES[4], "TreeVAE: the learned hierarchy as a dendrogram, with samples from every node"),
    (PAGES[5], "Compare: several models side by side, with their metrics"),
    (PAGES[6], "Encode your image: draw or upload a digit and see where it lands"),
    (PAGES[1], "Train: your own model, with live loss curves"),
]

st.navigation(PAGES).run()
