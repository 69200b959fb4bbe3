"""Every page through streamlit.testing.v1.AppTest, against the tiny digits checkpoints
(the app reads their folder from $LATENTVIZ_CHECKPOINTS and saves to $LATENTVIZ_RUNS):
each page runs without exceptions, its main widgets change what it shows, and bad input
is reported on the page."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import latentviz as lv
from latentviz import figures
from latentviz.models import VARIANTS
from latentviz.checkpoints import read_meta
from latentviz.ui import state, training
from latentviz.ui.upload import MAX_BYTES, UploadError, read_upload

from conftest import read_grid

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 180


@pytest.fixture(scope="module")
def folders(tiny_checkpoints, tmp_path_factory):
    """Point the app at the tiny checkpoints and an empty runs folder."""
    ckpts = Path(next(iter(tiny_checkpoints.values()))).parent
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATENTVIZ_CHECKPOINTS", str(ckpts))
        mp.setenv("LATENTVIZ_RUNS", str(runs))
        yield {"ckpts": ckpts, "runs": runs, "paths": tiny_checkpoints}


def open_page(page: str | None = None, checkpoint: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if checkpoint is not None:
        at.session_state[state.CHECKPOINT] = str(checkpoint)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, "\n".join(e.message + "\n" + "\n".join(e.stack_trace)
                                       for e in at.exception)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def grids(at: AppTest) -> list:
    """The page's image grids (``figures.image_grid``), in page order."""
    return [read_grid(e.proto.body) for e in at.get("html") if 'data-lv="grid"' in e.proto.body]


def arr(v) -> np.ndarray:
    """An array of a chart spec: Plotly writes numpy arrays as base64 typed arrays."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def n_points(spec: dict) -> int:
    return sum(len(arr(t["x"])) for t in spec["data"])


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def png(a: np.ndarray) -> bytes:
    """PNG bytes of an array (uint16 gives a 16-bit "I;16" image, RGBA keeps alpha)."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def digit_png() -> bytes:
    a = np.full((64, 64), 255, np.uint8)   # dark-on-light: the page inverts it
    a[10:54, 28:36] = 0
    return png(a)


# ----------------------------------------------------------------------------- Home

def test_home_lists_checkpoints_and_sidebar_shows_device(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path))   # not the runs other tests saved
    at = open_page()
    table = at.dataframe[0].value
    assert set(table["variant"]) == set(folders["paths"])
    assert not any("(yours)" in n for n in table["checkpoint"])
    assert "—" in set(table.to_numpy().ravel()), "a missing metric shows as a dash"
    assert "None" not in set(table.astype(str).to_numpy().ravel())
    assert "Device:" in texts(at.sidebar, "caption")
    assert any(("CPU" in c.value or "GPU" in c.value) for c in at.sidebar.caption)
    assert len(at.get("page_link")) == 6, "Home links to every other page"
    columns = json.loads(at.dataframe[0].proto.columns)
    assert columns["checkpoint"].get("pinned"), "a narrow window scrolls the metrics, not the names"


def test_home_reports_an_unreadable_checkpoint(folders, tmp_path, monkeypatch):
    shutil.copy(folders["paths"]["vae"], tmp_path / "good.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint at all")
    monkeypatch.setenv("LATENTVIZ_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path / "runs"))
    at = open_page()
    assert list(at.dataframe[0].value["checkpoint"]) in (["good"], ["good (collapsed)"])
    assert "broken.safetensors" in texts(at, "warning")


def test_home_trains_a_quick_model_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTVIZ_CHECKPOINTS", str(tmp_path / "none"))
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path / "runs"))
    # The same run, 3 epochs instead of 15: this tests the path, not the model.
    real = training.quick_spec
    monkeypatch.setattr(training, "quick_spec", lambda: dataclasses.replace(
        real(), train=real().train.replace(epochs=3)))
    at = open_page()
    assert not at.dataframe
    button = next(b for b in at.button if b.label == "Train a quick digits model")
    button.click().run(timeout=TIMEOUT)
    assert_clean(at)
    saved = tmp_path / "runs" / "digits-lambda_hot-quick.safetensors"
    assert saved.exists()
    assert list(at.dataframe[0].value["checkpoint"])[0].startswith("digits-lambda_hot-quick (yours)")
    assert at.sidebar.selectbox[0].value == str(saved)


def test_home_adds_an_uploaded_checkpoint_and_refuses_a_bad_one(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path))
    at = open_page()
    at.file_uploader[0].set_value(("evil.safetensors", b"\x00" * 64, "application/octet-stream"))
    at.run()
    assert "not a safetensors checkpoint" in texts(at, "error")
    assert not list(tmp_path.iterdir())
    blob = Path(folders["paths"]["kmeans"]).read_bytes()
    at.file_uploader[0].set_value(("../mine.safetensors", blob, "application/octet-stream"))
    at.run()
    assert_clean(at)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.safetensors"]
    assert "Added `mine.safetensors`" in texts(at, "success")
    assert any("(yours)" in n for n in at.dataframe[0].value["checkpoint"])
    at.run()                                       # a rerun does not store it again
    assert [p.name for p in tmp_path.iterdir()] == ["mine.safetensors"]


# ----------------------------------------------------------------------------- Train

def name_input(at):
    return next(t for t in at.text_input if t.label == "Checkpoint name")


def test_train_page_explains_invalid_values(folders):
    at = open_page("Train")
    train = next(b for b in at.button if b.label == "Train")
    assert not train.disabled
    at.number_input(key="train.lr").set_value(0.0).run()
    assert "lr = 0.0 is not allowed: > 0.0" in texts(at, "error")
    assert next(b for b in at.button if b.label == "Train").disabled
    at.number_input(key="train.lr").set_value(0.001)
    at.selectbox[1].set_value("lambda_hot").run()          # variant
    at.number_input(key="model.lambda_hot.latent_dim").set_value(4).run()
    assert "latent_dim = 4 is not allowed" in texts(at, "error")
    at.number_input(key="model.lambda_hot.latent_dim").set_value(20)
    name_input(at).set_value("no spaces please").run()
    assert "checkpoint name" in texts(at, "error")
    assert_clean(at)


def test_training_runs_in_the_background_and_stops_early(folders):
    at = open_page("Train")
    at.number_input(key="model.vae.hidden").set_value(16)
    at.number_input(key="model.vae.latent_dim").set_value(4)
    at.number_input(key="train.epochs").set_value(400)
    name_input(at).set_value("bg-stop").run()
    t0 = time.perf_counter()
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[state.JOB]
    assert job.running, "the page returned only after training had finished"
    assert time.perf_counter() - t0 < 60
    assert at.get("progress")
    next(b for b in at.button if b.label == "Stop after this epoch").click().run()
    deadline = time.time() + TIMEOUT
    while job.running and time.time() < deadline:
        time.sleep(0.5)
    at.run()
    assert_clean(at)
    assert job.status == "stopped", job.snapshot()
    out = folders["runs"] / "bg-stop.safetensors"
    meta = read_meta(out).meta
    assert 1 <= meta["epochs"] < 400
    assert "Stopped early" in texts(at, "success")
    assert at.sidebar.selectbox[0].value == str(out)          # selected for every page
    curves = charts(at)[0]
    assert {a["text"] for a in curves["layout"]["annotations"]} == {"recon", "kl"}


def test_an_interrupted_run_is_offered_on_the_train_page_and_resumed(folders, tmp_path,
                                                                     monkeypatch):
    from latentviz.runs import RunSpec, partial_path, run_training
    from latentviz.train import TrainConfig

    # A runs folder of its own: other tests leave runs (stopped, interrupted) in the shared one.
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path))
    out = tmp_path / "cut.safetensors"

    def crash(p):
        if p.epoch == 3:
            raise KeyboardInterrupt  # the server process dies mid-run
    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec("vae", "digits", {"hidden": 16, "latent_dim": 4},
                             TrainConfig(epochs=6, batch_size=64), out), crash, classifiers=())
    partial = partial_path(out)
    done = read_meta(partial).meta["epochs"]
    assert 2 <= done < 6 and not out.exists()
    junk = tmp_path / "junk.partial.safetensors"
    junk.write_bytes(b"not a checkpoint")
    at = open_page("Train")
    junk.unlink()
    assert f"`cut.partial.safetensors`: **vae** on **digits**, {done} epochs done" in texts(
        at, "markdown")
    assert "`junk.partial.safetensors` cannot be resumed" in texts(at, "warning")
    assert sum(b.label == "Resume" for b in at.button) == 1
    next(b for b in at.button if b.label == "Resume").click().run()
    job = at.session_state[state.JOB]
    assert job.resume_from == str(partial) and job.spec.out == out
    assert job.wait(TIMEOUT), "the resumed run did not finish"
    at.run()
    assert_clean(at)
    assert job.status == "done", job.snapshot()
    assert read_meta(out).meta["epochs"] == 6 and not partial.exists()
    xs = [x for x, _ in job.snapshot().train]
    assert xs[:done] == list(range(1, done + 1)) and xs == sorted(xs) and xs[-1] == 6, \
        "the curves show the epochs before the cut, then go on"
    assert at.sidebar.selectbox[0].value == str(out)
    assert not any(b.label == "Resume" for b in at.button), "the finished run is still offered"


def test_a_run_still_going_is_not_offered_as_interrupted_nor_written_twice(folders):
    """Another session's running job has a partial file in the runs folder too: it is not
    listed for resuming, and no second job may write the same checkpoint."""
    from latentviz.runs import RunSpec, partial_path
    from latentviz.train import TrainConfig

    out = folders["runs"] / "going.safetensors"
    spec = RunSpec("vae", "digits", {"hidden": 16, "latent_dim": 4},
                   TrainConfig(epochs=400, batch_size=64), out)
    job = training.TrainingJob(spec, classifiers=()).start()
    try:
        deadline = time.time() + TIMEOUT
        while not partial_path(out).exists() and time.time() < deadline:
            time.sleep(0.1)
        assert partial_path(out).exists()
        at = open_page("Train")
        assert "going.partial.safetensors" not in texts(at, "markdown")
        assert "Also training in this app (other browser sessions): `going.safetensors`" in \
            texts(at, "caption")
        with pytest.raises(training.Busy, match="another run in this app is writing"):
            training.TrainingJob(spec, classifiers=()).start()
    finally:
        job.request_stop()
        assert job.wait(TIMEOUT)
    assert job.status == "stopped" and out.exists()


def test_an_interrupted_treevae_says_how_many_growth_stages_it_finished(tmp_path):
    from latentviz.models.tree_vae import TreeVAEConfig
    from latentviz.runs import RunSpec, partial_path, run_training
    from latentviz.train import TrainConfig

    out = tmp_path / "tree.safetensors"

    def crash(p):
        if p.stage.startswith("split 2"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec("treevae", "digits", dict(TreeVAEConfig.TINY),
                             TrainConfig(batch_size=64), out), crash, classifiers=())
    epochs = read_meta(partial_path(out)).meta["epochs"]
    text = training.describe_interrupted(partial_path(out))
    assert text.startswith(f"**treevae** on **digits**, {epochs} epochs done, 2 growth stages "
                           "and 1 of 1 epochs of split 2"), text


def test_treevae_curves_run_over_all_growth_stages(folders):
    """Each stage restarts its epoch count; the live curves' x axis does not."""
    from latentviz.models.tree_vae import TreeVAEConfig
    from latentviz.runs import RunSpec
    from latentviz.train import TrainConfig

    job = training.TrainingJob(RunSpec("treevae", "digits", dict(TreeVAEConfig.TINY),
                                       TrainConfig(batch_size=64),
                                       folders["runs"] / "curves-tree.safetensors"),
                               classifiers=()).start()
    assert job.wait(TIMEOUT) and job.status == "done", job.snapshot()
    snap = job.snapshot()
    xs = [x for x, _ in snap.train]
    assert xs == sorted(xs) and xs[-1] == snap.result["epochs"] == job.epochs_done
    assert [x for x, _ in snap.test] == list(range(1, job.epochs_done + 1))


# ----------------------------------------------------------------------------- Latent space

def test_latent_space_says_why_a_trees_pca_mixes_its_clusters(folders):
    at = open_page("Latent_space", folders["paths"]["treevae"])
    assert "a linear map mixes what the tree separates" in texts(at, "caption")
    assert "TreeVAE leaf" in at.selectbox(key="ls.colour").options
    at.radio(key="ls.method").set_value("tsne").run()
    assert_clean(at)
    assert "linear map mixes" not in texts(at, "caption")
    plain = open_page("Latent_space", folders["paths"]["vae"])
    assert "linear map mixes" not in texts(plain, "caption")


def test_latent_space_widgets_change_the_map(folders):
    at = open_page("Latent_space", folders["paths"]["lambda_hot"])
    spec = charts(at)[0]
    assert n_points(spec) == 360 and len(spec["data"]) == 10
    assert all(t["type"] == "scattergl" for t in spec["data"])
    at.number_input(key="ls.n").set_value(50).run()
    assert "**50** of 360 test images" in texts(at, "caption")
    assert n_points(charts(at)[0]) == 50
    assert "predicted class" in at.selectbox[0].options
    at.selectbox[0].set_value("k-means cluster").run()
    at.number_input[-1].set_value(3).run()
    # clusters are named as clusters and drawn in another palette than the classes
    kmeans = charts(at)[0]["data"]
    assert [t["name"] for t in kmeans] == ["k-means 0", "k-means 1", "k-means 2"]
    assert {t["marker"]["color"] for t in kmeans}.isdisjoint(figures.PALETTE[:10])
    at.radio(key="ls.method").set_value("tsne").run()
    assert "t-SNE (random_state 0, perplexity 16.3)" in texts(at, "caption")
    at.number_input(key="ls.seed").set_value(1).run()          # another seed: turned onto seed 0
    assert at.toggle(key="ls.align").value
    aligned = charts(at)[0]["data"]
    at.toggle(key="ls.align").set_value(False).run()
    assert [t["x"] for t in charts(at)[0]["data"]] != [t["x"] for t in aligned]
    assert at.get("download_button")
    assert "Nothing selected yet" in texts(at, "caption")
    assert_clean(at)


def test_a_link_opens_the_view_and_the_decoded_map_draws_under_it(folders):
    """?checkpoint=&method=&n=&seed= restores the view; the decoded map (PCA: exact
    inverse) is one image under the points; a malformed value falls back to the default."""
    name = Path(folders["paths"]["kmeans"]).stem
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.query_params.update({"checkpoint": name, "method": "pca", "n": "40", "seed": "3"})
    at.switch_page("pages/Latent_space.py").run()
    assert_clean(at)
    assert at.session_state[state.CHECKPOINT] == str(folders["paths"]["kmeans"])
    assert "**40** of 360 test images" in texts(at, "caption") and "seed **3**" in texts(at, "caption")
    at.slider(key="ls.grid").set_value(4).run()
    assert_clean(at)
    spec = charts(at)[0]
    assert len(spec["layout"]["images"]) == 1, "the decoded grid is one image under the map"
    assert "exact" in spec["layout"]["title"]["text"]
    bad = AppTest.from_file(APP, default_timeout=TIMEOUT)
    bad.run()
    bad.query_params.update({"n": "many", "method": "nonsense"})
    bad.switch_page("pages/Latent_space.py").run()
    assert_clean(bad)
    assert bad.radio(key="ls.method").value == "pca"


# ----------------------------------------------------------------------------- Samples

def test_samples_tabs_render_and_their_controls_redecode(folders):
    at = open_page("Samples", folders["paths"]["kmeans"])
    assert "the model's own centres" in at.radio[0].options
    look = lambda g: (g.rows, g.cols, [i.tobytes() for i in g.images])  # noqa: E731
    before = grids(at)
    # centres, CVAE rows, lambda-hot rows, interpolation, traversal; the KL bars a chart
    assert len(before) == 5 and len(charts(at)) == 1
    assert before[0].n_cols == 10
    at.slider(key="sm.c.n").set_value(4).run()
    after = grids(at)
    assert after[0].n_cols == 4
    assert [look(g) for g in after[1:]] == [look(g) for g in before[1:]]
    dim = at.selectbox(key=f"sm.t.dim.{folders['paths']['kmeans']}")
    assert str(dim.value) == dim.options[0].split()[0], "the most active dimension first"
    dim.set_value(3).run()
    assert look(grids(at)[-1]) != look(after[-1])
    at.number_input(key="sm.i.b").set_value(7).run()
    assert "test image 7" in texts(at, "caption")
    assert_clean(at)


def test_a_model_with_one_source_of_centres_says_it_rather_than_offering_a_choice(folders):
    """A plain VAE has no centres of its own: its rows are around k-means centres, said
    in a line, not a radio with one option."""
    at = open_page("Samples", folders["paths"]["vae"])
    assert not [r for r in at.radio if r.label == "Centres"]
    assert "**Centres**  \nk-means on the latent means" in texts(at, "markdown")
    assert len(grids(at)) >= 1
    assert_clean(at)


def test_samples_opens_the_tab_and_settings_its_link_names(folders):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.query_params.update({"tab": "Traversal", "sm.t.span": "5.0", "sm.i.b": "7"})
    at.switch_page("pages/Samples.py").run()
    assert_clean(at)
    assert at.slider(key="sm.t.span").value == 5.0
    assert "test image 7" in texts(at, "caption")
    assert at.tabs[0].label == "Cluster centres"


def test_a_trees_cluster_centre_rows_are_its_leaves_generated_by_the_tree(folders, digits):
    """A TreeVAE's rows are its leaves, drawn from its own generative model, each labelled
    with the test images routed there; k-means on its zero-padded path embedding stays an
    option but is not the default."""
    path = folders["paths"]["treevae"]
    at = open_page("Samples", path)
    assert at.radio[0].options == ["the tree's leaves", "k-means on the latent means"]
    assert at.radio[0].value == "the tree's leaves"
    assert at.slider(key="sm.c.s").disabled, "a leaf draws with its own prior's variance"
    model, _ = lv.load(path)
    rows = grids(at)[0].rows
    assert [r.split(":")[0] for r in rows] == [f"leaf {leaf}" for leaf in model.tree.leaves]
    n_test = len(digits.y_test)
    assert sum(int(r.split(": ")[1].split()[0]) for r in rows) == n_test, \
        "every test image is counted at the one leaf it is routed to"
    at.radio[0].set_value("k-means on the latent means").run()
    assert_clean(at)
    assert not at.slider(key="sm.c.s").disabled
    assert grids(at)[0].rows[0].startswith("0: ")


# ----------------------------------------------------------------------------- TreeVAE

def test_treevae_page_shows_the_tree_and_a_chosen_node(folders):
    if "treevae" not in folders["paths"]:
        at = open_page("TreeVAE")
        assert "No TreeVAE checkpoint" in texts(at, "info") or "not part" in texts(at, "info")
        return
    at = open_page("TreeVAE", folders["paths"]["treevae"])
    labels = [m.label for m in at.metric]
    assert labels == ["DP (dendrogram purity)", "LP (leaf purity)", "Leaf ACC", "Leaf NMI"]
    assert all(m.value != "n/a" for m in at.metric)
    tree = charts(at)[0]
    nodes = next(t for t in tree["data"] if t.get("name") == "nodes")
    node = at.selectbox(key=f"tv.node.{folders['paths']['treevae']}")
    leaf = [i for i in node.options if i.startswith("leaf")][-1]
    node.set_value(int(leaf.split()[1])).run()
    assert_clean(at)
    assert f"Leaf {leaf.split()[1]}" in texts(at, "subheader")
    assert len(arr(nodes["customdata"])) == len(node.options)


def test_switching_tree_resets_the_node_picker_to_the_new_tree(folders):
    if "treevae" not in folders["paths"]:
        pytest.skip("no tiny TreeVAE")
    other = folders["runs"] / "other-tree.safetensors"
    shutil.copy(folders["paths"]["treevae"], other)
    try:
        at = open_page("TreeVAE", folders["paths"]["treevae"])
        node = at.selectbox(key=f"tv.node.{folders['paths']['treevae']}")
        leaf = [i for i in node.options if i.startswith("leaf")][-1]
        node.set_value(int(leaf.split()[1])).run()
        pick = next(s for s in at.selectbox if s.label == "TreeVAE checkpoint")
        pick.set_value(next(e for e in pick.options if "other-tree" in e)).run()
        assert_clean(at)
        assert at.session_state[state.CHECKPOINT] == str(other), "the tree picked is current"
        fresh = at.selectbox(key=f"tv.node.{other}")
        assert fresh.value == 0 and "Node 0" in texts(at, "subheader"), \
            "the node picker kept the previous tree's node"
    finally:
        other.unlink()


def test_treevae_and_compare_open_the_view_their_link_names(folders):
    names = {v: Path(p).stem for v, p in folders["paths"].items()}
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.query_params.update({"compare": f"{names['vae']},{names['kmeans']}", "method": "pca"})
    at.switch_page("pages/Compare.py").run()
    assert_clean(at)
    assert [e.name for e in at.multiselect[0].value] == [names["vae"], names["kmeans"]]
    assert at.radio(key="cmp.method").value == "pca"
    if "treevae" in names:
        tv = AppTest.from_file(APP, default_timeout=TIMEOUT)
        tv.run()
        tv.query_params.update({"tree": names["treevae"], "node": "2"})
        tv.switch_page("pages/TreeVAE.py").run()
        assert_clean(tv)
        assert "Node 2" in texts(tv, "subheader") or "Leaf 2" in texts(tv, "subheader")
        # The linked tree is the current checkpoint: the next page shows it, not the default.
        assert tv.session_state[state.CHECKPOINT] == str(folders["paths"]["treevae"])
        assert "is not a TreeVAE" not in texts(tv, "caption")
        tv.switch_page("pages/Latent_space.py").run()
        assert_clean(tv)
        assert tv.session_state[state.CHECKPOINT] == str(folders["paths"]["treevae"])
    bad = AppTest.from_file(APP, default_timeout=TIMEOUT)
    bad.run()
    bad.query_params.update({"compare": "nothing-like-this", "tree": "nope", "node": "x"})
    bad.switch_page("pages/Compare.py").run()
    assert_clean(bad)
    assert bad.multiselect[0].value, "an unknown name falls back to the default set"


# ----------------------------------------------------------------------------- Compare

def test_compare_shows_the_chosen_checkpoints_side_by_side(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path))   # only the shipped (tiny) ones
    at = open_page("Compare", folders["paths"]["lambda_hot"])
    chosen = at.multiselect[0].value
    # the current model, then one model per other variant of its dataset, collapsed last
    assert chosen[0].variant == "lambda_hot" and len({e.variant for e in chosen}) == 4
    flags = [bool(e.collapsed) for e in chosen[1:]]
    assert flags == sorted(flags)
    assert len(charts(at)[0]["layout"]["annotations"]) == 4
    assert len(at.dataframe[0].value) == 4
    at.multiselect[0].set_value(chosen[:2]).run()
    assert [a["text"] for a in charts(at)[0]["layout"]["annotations"]] == [
        f"{e.name}<br>{VARIANTS[e.variant].title}" for e in chosen[:2]]
    assert list(at.dataframe[0].value["variant"]) == [e.variant for e in chosen[:2]]
    on = charts(at)[0]["data"]
    at.toggle(key="cmp.align").set_value(False).run()
    off = charts(at)[0]["data"]
    first = [t for t in on if t.get("xaxis", "x") == "x"]
    assert [t["x"] for t in first] == [t["x"] for t in off[:len(first)]], "the first panel stays"
    assert [t["x"] for t in on[len(first):]] != [t["x"] for t in off[len(first):]], \
        "the second panel is moved onto the first"
    labels = [b.label for b in at.get("download_button")]
    assert any(lab.startswith("Download the maps") for lab in labels)
    assert "Download the table (CSV)" in labels
    assert_clean(at)


# ----------------------------------------------------------------------------- Encode

def test_encode_places_an_upload_and_classifies_it(folders):
    at = open_page("Encode", folders["paths"]["lambda_hot"])
    assert at.info
    at.file_uploader[0].set_value(("one.png", digit_png(), "image/png")).run()
    assert_clean(at)
    assert [m.label for m in at.metric] == ["Predicted class", "Neighbours agree",
                                            "Reconstruction error"]
    names = [t["name"] for t in charts(at)[-1]["data"]]
    assert names[-1] == "your image"
    at.radio(key="enc.invert").set_value("no").run()     # dark on light, read as it is:
    assert_clean(at)
    assert "no ink" in texts(at, "error")                  # white paper, no light ink on it
    at.radio(key="enc.invert").set_value("auto").run()
    at.radio(key="enc.method").set_value("umap").run()    # placed by its neighbours
    assert_clean(at)
    spec = charts(at)[-1]
    star = spec["data"][-1]
    assert star["name"] == "your image" and np.isfinite(arr(star["x"])).all()
    xs = np.concatenate([arr(t["x"]) for t in spec["data"][:-1]])
    assert xs.min() <= arr(star["x"])[0] <= xs.max()       # on the map, not off it


def test_a_finished_projection_leaves_no_progress_bar_in_place_of_the_result(folders):
    at = open_page("Encode", folders["paths"]["lambda_hot"])
    at.file_uploader[0].set_value(("one.png", digit_png(), "image/png")).run()
    at.radio(key="enc.method").set_value("tsne").run()
    assert_clean(at)
    assert not at.get("progress"), \
        f"a finished bar stayed on the page: {[p.proto.text for p in at.get('progress')]}"
    assert "Predicted class" in [m.label for m in at.metric]
    at.run()                                      # a cache hit replays nothing stale either
    assert not at.get("progress") and "Predicted class" in [m.label for m in at.metric]


@pytest.mark.parametrize("name,data,message", [
    ("bad.png", b"this is not an image", "not an image"),
    ("empty.png", b"", "empty"),
    ("huge.png", png(np.zeros((2100, 2100), np.uint8)), "pixels is too large"),
    ("deep.png", png(np.zeros((8, 8), np.uint16)), "mode"),
], ids=["not-an-image", "empty", "too-many-pixels", "16-bit"])
def test_encode_reports_bad_files(folders, name, data, message):
    at = open_page("Encode", folders["paths"]["vae"])
    at.file_uploader[0].set_value((name, data, "image/png")).run()
    assert_clean(at)
    assert message in texts(at, "error")
    assert not at.metric


def test_read_upload_lays_transparent_drawings_on_white():
    a = np.zeros((10, 10, 4), np.uint8)          # fully transparent ...
    a[2:8, 4:6] = (0, 0, 0, 255)                 # ... but for a black stroke
    grey = read_upload(png(a))
    assert grey.shape == (10, 10) and grey[0, 0] == 255 and grey[4, 4] == 0


def test_read_upload_bounds_bytes_before_decoding():
    with pytest.raises(UploadError, match="too large"):
        read_upload(b"\x89PNG" + b"0" * MAX_BYTES)


def test_treevae_page_puts_the_tree_beside_a_vae_ward_baseline(folders):
    """On demand, the tree's DP / LP / ACC / NMI beside Ward on the plain VAE's test latents
    cut to the tree's leaves: the numbers tree.agglomerative_scores gives on those latents."""
    if "treevae" not in folders["paths"]:
        pytest.skip("no tiny TreeVAE")
    from latentviz import load
    from latentviz.data import load_dataset
    from latentviz.embeddings import encode_means
    from latentviz.tree import agglomerative_scores

    at = open_page("TreeVAE", folders["paths"]["treevae"])
    assert not at.dataframe, "the baseline is computed only when asked for"
    toggle = at.toggle(key="tv.baseline")
    assert "digits-vae" in toggle.label
    toggle.set_value(True).run()
    assert_clean(at)
    df = at.dataframe[0].value
    assert list(df["Method"]) == ["TreeVAE", "VAE + Ward (digits-vae)"]
    meta = read_meta(folders["paths"]["treevae"])
    k = int(meta.metrics["n_leaves"])
    assert f"{k} leaves" in toggle.label
    data = load_dataset("digits")
    z = encode_means(load(folders["paths"]["vae"])[0], data.x_test).numpy()
    want = agglomerative_scores(z, data.y_test.numpy(), (k,), full_tree=False)[k]
    got = df.set_index("Method").loc["VAE + Ward (digits-vae)"]
    for col, key in (("DP", "dp"), ("LP", "lp"), ("ACC", "acc"), ("NMI", "nmi")):
        assert got[col] == pytest.approx(want[key], abs=1e-3), (col, got[col], want[key])
    tv = df.set_index("Method").loc["TreeVAE"]
    assert tv["DP"] == pytest.approx(meta.metrics["dp"], abs=1e-3)
    assert "of the 4" in texts(at, "caption")
