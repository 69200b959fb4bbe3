"""Train: a dataset, a variant and its hyperparameters; training runs in a background
thread of this session, polled by a fragment, so the app stays responsive."""
import re

import streamlit as st

from latentviz import ui
from latentviz.checkpoints import CheckpointError
from latentviz.data import DATASETS, DatasetError, dataset_label
from latentviz.models import VARIANTS, ConfigError
from latentviz.runs import RunSpec
from latentviz.train import TrainConfig
from latentviz.ui import state
from latentviz.ui.training import Busy, TrainingJob, active_outputs, describe_interrupted

MAIN_TRAIN = ("epochs", "batch_size", "lr", "weight_decay", "seed")
MORE_TRAIN = ("device", "amp", "eval_batch_size", "log_every")

st.title("Train")
ui.sidebar()
job = st.session_state.get(state.JOB)

running = job is not None and job.running
if running:
    st.caption(f"Training **{job.spec.variant}** on **{job.spec.dataset}** → `{job.spec.out}`")

    @st.fragment(run_every=1.0)
    def live():
        ui.show_training(job.snapshot())
        if st.button("Stop after this epoch", disabled=job.stopping):
            job.request_stop()
        if not job.running:  # finished: refresh the whole app (sidebar, checkpoint lists)
            st.rerun()

    live()
elif job is not None and (new := job.new_checkpoint()):
    st.session_state[state.SELECT_NEXT] = new  # the sidebar picks it on this rerun
    st.rerun()
elif job is not None:
    with st.expander(f"Last run: {job.status}", expanded=True):
        ui.show_training(job.snapshot())

# Runs cut off (server restart, crash, a killed process) keep their finished epochs
# (TreeVAE: growth stages) in a partial checkpoint; offer to go on from there. The partial
# files of runs still going in this app (other sessions') are not interrupted.
others = sorted(active_outputs() - ({job.output} if running else set()))
if others:  # e.g. started from a tab that was closed since: it goes on in the server
    st.caption("Also training in this app (other browser sessions): "
               + ", ".join(f"`{state.Path(o).name}`" for o in others)
               + "; each appears in the checkpoint list when it finishes.")
if not running and (partials := state.interrupted_runs(busy=active_outputs())):
    with st.expander(f"Interrupted runs ({len(partials)})", expanded=True):
        for path in partials:
            c1, c2 = st.columns([4, 1])
            try:
                c1.markdown(f"`{path.name}`: {describe_interrupted(path)}")
            except CheckpointError as exc:
                c1.warning(f"`{path.name}` cannot be resumed: {exc}")
                continue
            if c2.button("Resume", key=f"resume.{path}"):
                try:
                    st.session_state[state.JOB] = TrainingJob.resuming(path).start()
                except (Busy, CheckpointError, ConfigError) as exc:
                    st.error(str(exc))
                    st.stop()
                st.rerun()

# The form stays on the page during a run, so its values survive it (Streamlit forgets
# the state of widgets that a run does not draw).
c1, c2 = st.columns(2)
OWN = "your own images (a path)"
dataset = c1.selectbox("Dataset", (*DATASETS, OWN), help="digits is bundled (8x8, 1,797 "
                       "images); the MNIST family is read from $LATENTVIZ_DATA or downloaded.")
own = dataset == OWN
if own:
    dataset = c1.text_input(
        "Path on the server", key="train.own_path", placeholder="/data/shapes or /data/shapes.npz",
        help="A folder with one subfolder per class (optionally under train/ and test/), or an "
        ".npz file with x, y and optionally class_names. Grey or RGB; sides over 64 are "
        "resized to 64.").strip()
    image_size = int(c1.number_input("Image size (0 = as found; sides over 64 become 64)", 0,
                                     512, 0, key="train.own_size")) or None
    if not dataset:
        st.info("Give the path of an image folder or an .npz file on this server.")
        st.stop()
else:
    image_size = None
variant = c2.selectbox("Variant", list(VARIANTS), format_func=lambda v: VARIANTS[v].title)
v = VARIANTS[variant]
st.caption(f"{v.summary} — *{v.paper}*")
try:
    data = ui.dataset(dataset, image_size)  # your own images: read and checked here
except (DatasetError, ConfigError) as exc:
    st.error(str(exc))
    st.stop()

st.subheader("Model")
# Own images get their own widget keys: a keyed widget keeps its value over a new default.
model_values = ui.config_inputs(v.cls.Config, key=f"model.{variant}" + (".own" if own else ""),
                                defaults={**v.defaults, **({"backbone": "auto"} if own else {})},
                                skip=("image_shape", "n_classes"))
st.subheader("Training")
train_values = ui.config_inputs(TrainConfig, key="train", only=MAIN_TRAIN)
with st.expander("More settings"):
    train_values.update(ui.config_inputs(TrainConfig, key="train", only=MORE_TRAIN))
    n_train = int(st.number_input("n_train", value=0, step=500, help="Train on a random slice "
                                  "of this many training images (0 = all); for quick tries."))

seed = train_values.get("seed", 0)
name = st.text_input("Checkpoint name", value=f"{dataset_label(dataset)}-{variant}-seed{seed}",
                     help=f"Saved as {state.runs_dir()}/<name>.safetensors")
spec, problems = None, []
if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
    problems.append("checkpoint name: use letters, digits, '.', '_' or '-' (up to 100)")
try:
    spec = RunSpec(variant, dataset, model=model_values, train=TrainConfig(**train_values),
                   out=state.runs_dir() / f"{name}.safetensors", n_train=n_train or None,
                   image_size=image_size)
    spec.model_config(data)  # cross-field checks need the data's shape and classes
except ConfigError as exc:
    problems.append(str(exc))
    spec = None
for p in problems:
    st.error(f"Invalid setting: {p}")
if spec is not None and not problems and spec.out.exists():
    st.warning(f"`{spec.out}` exists and will be replaced when this run finishes.")

if st.button("Train", type="primary", disabled=bool(problems) or running,
             help="One run at a time per session" if running else None):
    try:
        st.session_state[state.JOB] = TrainingJob(spec).start()
    except Busy as exc:
        st.error(str(exc))
        st.stop()
    st.rerun()
