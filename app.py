"""latentviz in the browser: ``streamlit run app.py``.

The entry script: page navigation and the Home page. Every page draws the same sidebar
(device, checkpoint picker) with ``ui.sidebar()``. Checkpoints are read from
``$LATENTVIZ_CHECKPOINTS`` (default checkpoints/) and ``$LATENTVIZ_RUNS`` (default runs/,
where the app saves new ones).
"""
import streamlit as st

from latentviz import checkpoints, figures, ui
from latentviz.ui import state

st.set_page_config(page_title="latentviz", layout="wide")

HEADLINE = ("test_recon", "acc_logreg", "acc_own", "kmeans_acc", "kmeans_nmi", "dp", "lp")


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
        df = figures.metrics_table([{"name": e.name, "variant": e.variant, "dataset": e.dataset,
                                     "epochs": e.epochs, "metrics": e.metrics} for e in ok],
                                   keys=HEADLINE)
        df.insert(1, "source", [e.source for e in ok])
        st.dataframe(df, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in df.columns[5:]})
        st.caption(f"Shipped: `{state.shipped_dir()}` · yours: `{state.runs_dir()}`. "
                   "Accuracies are on the test set; recon is binary cross-entropy per image.")
    for e in ents:
        if e.error:
            st.warning(f"Skipped {e.path}: {e.error}")
    with st.expander("Add a checkpoint file"):
        add_checkpoint()
    st.subheader("Where to start")
    st.page_link(PAGES[2], label="Latent space: the test set as a 2-D map; select points to "
                 "see their images")
    st.page_link(PAGES[3], label="Samples: decode cluster centres, classes, interpolations")
    st.page_link(PAGES[5], label="Compare: several models side by side, with their metrics")
    st.page_link(PAGES[1], label="Train: your own model, with live loss curves")


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
    try:  # checked completely (it must load) before anything is written
        path = checkpoints.store_upload(up.getvalue(), up.name, state.runs_dir())
    except checkpoints.CheckpointError as exc:
        st.error(str(exc))
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
    st.Page(home, title="Home", icon=":material/home:", default=True),
    # url paths default to the file names, as in the pages/ folder listing Streamlit shows
    # before this script has run (a custom path would flash "page not found" first).
    st.Page("pages/Train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/Latent_space.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page("pages/Samples.py", title="Samples", icon=":material/grid_view:"),
    st.Page("pages/TreeVAE.py", title="TreeVAE", icon=":material/account_tree:"),
    st.Page("pages/Compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/Encode.py", title="Encode your image", icon=":material/upload:"),
]

st.navigation(PAGES).run()
