"""Your own images as a dataset: an image folder (with or without train/ and test/) or an
.npz file trains every variant from the CLI and the Train page, evaluates, reopens for its
checkpoint on every page, and anything unusable is refused naming the file. Generated data
only: coloured shapes (circle, cross, square) and their grey versions."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import latentviz as lv
from latentviz import data as lvdata
from latentviz.__main__ import main
from latentviz.checkpoints import read_meta
from latentviz.data import DatasetError, load_dataset
from latentviz.models.base import recon_sse
from latentviz.train import train_model
from latentviz.ui import cache as ui_cache
from latentviz.ui import state

from conftest import read_grid, tiny_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ("Latent_space", "Samples", "Encode", "Compare", "TreeVAE", "Train")
CLASSES = ("circle", "cross", "square")  # sorted, as ImageFolder orders its class folders
COLOURS = np.array([[230, 40, 40], [40, 200, 40], [60, 60, 250]])


def shapes(n_per_class: int, size: int = 12, seed: int = 0, grey: bool = False):
    """Images (N, size, size, 3) uint8, or (N, size, size) grey, and labels (N,)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    xs, ys = [], []
    for k in range(3):
        for _ in range(n_per_class):
            cy, cx = rng.uniform(0.4, 0.6, 2) * size
            r = rng.uniform(0.2, 0.3) * size
            mask = [(yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
                    (abs(yy - cy) < 0.35 * r) | (abs(xx - cx) < 0.35 * r),
                    (abs(yy - cy) < r) & (abs(xx - cx) < r)][k]
            img = np.zeros((size, size, 3))
            img[mask] = COLOURS[k] * rng.uniform(0.7, 1.0)
            xs.append(img.astype(np.uint8))
            ys.append(k)
    x = np.stack(xs)
    return (x.max(axis=3) if grey else x), np.asarray(ys)


def write_folder(root: Path, x, y) -> Path:
    for i, (a, k) in enumerate(zip(x, y)):
        (root / CLASSES[k]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / CLASSES[k] / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path]:
    """The three forms: a colour folder, the same images as .npz, a grey train/test folder."""
    root = tmp_path_factory.mktemp("own")
    x, y = shapes(10)
    np.savez(root / "shapes.npz", x=x, y=y, class_names=np.array(CLASSES))
    gx, gy = shapes(8, size=10, seed=1, grey=True)
    tx, ty = shapes(3, size=10, seed=2, grey=True)
    write_folder(root / "grey" / "train", gx, gy)
    write_folder(root / "grey" / "test", tx, ty)
    return {"folder": write_folder(root / "shapes", x, y), "npz": root / "shapes.npz",
            "grey": root / "grey"}


# ----------------------------------------------------------------------------- loading

def test_a_folder_and_the_same_images_as_npz_are_the_same_dataset(forms):
    f, n = load_dataset(str(forms["folder"])), load_dataset(str(forms["npz"]))
    assert f.x_train.shape == (24, 3, 12, 12) and f.x_test.shape == (6, 3, 12, 12)
    assert f.class_names == CLASSES and f.y_train.dtype == torch.int64
    assert f.source["images_per_class"] == {"train": [8, 8, 8], "test": [2, 2, 2]}  # stratified
    assert torch.equal(f.x_train, n.x_train) and torch.equal(f.y_test, n.y_test)
    assert f.source["sha256"] == n.source["sha256"]
    x, _ = shapes(10)
    red = f.x_train[f.y_train == 0].amax(dim=(0, 2, 3))  # circles are red: colour is kept
    assert red[0] > 0.6 and red[1] < 0.2 and red[2] < 0.2, red
    assert f.x_train.max() * 255 == pytest.approx(x.max(), abs=0.5)


def test_a_grey_folder_with_train_and_test_keeps_that_split(forms):
    g = load_dataset(str(forms["grey"]))
    assert g.x_train.shape == (24, 1, 10, 10) and g.x_test.shape == (9, 1, 10, 10)
    assert g.source["split"] == "train/ and test/ folders"


def test_large_images_are_resized_to_64_unless_a_size_is_chosen(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (15, 70, 66), dtype=np.uint8)
    y = np.arange(15) % 3
    np.savez(tmp_path / "big.npz", x=x, y=y)
    assert load_dataset(str(tmp_path / "big.npz")).image_shape == (1, 64, 64)
    assert load_dataset(str(tmp_path / "big.npz"), image_size=16).image_shape == (1, 16, 16)
    np.savez(tmp_path / "small.npz", x=x[:, :20, :30], y=y)
    assert load_dataset(str(tmp_path / "small.npz")).image_shape == (1, 20, 30)  # kept


# ----------------------------------------------------------------------------- refusals

def refused(path, match: str, **kw) -> str:
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(str(path), **kw)
    return str(err.value)


def test_refuses_a_folder_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert str(tmp_path) in refused(tmp_path, "no images found")


def test_refuses_one_class(tmp_path, forms):
    x, y = shapes(2)
    write_folder(tmp_path / "one", x[y == 0], y[y == 0])
    assert str(tmp_path / "one") in refused(tmp_path / "one", "one class")
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(len(x), int))
    assert str(tmp_path / "one.npz") in refused(tmp_path / "one.npz", "one class")


def test_refuses_images_of_mixed_sizes(tmp_path):
    x, y = shapes(2)
    write_folder(tmp_path, x, y)
    odd = tmp_path / "square" / "odd.png"
    Image.fromarray(np.zeros((12, 13, 3), np.uint8)).save(odd)
    assert str(odd) in refused(tmp_path, "13x12 pixels.*same size")


def test_refuses_grey_and_colour_images_mixed(tmp_path):
    x, y = shapes(2)
    write_folder(tmp_path, x, y)
    grey = tmp_path / "square" / "grey.png"
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(grey)
    assert str(grey) in refused(tmp_path, "a grey image among colour ones")


def test_refuses_an_unreadable_image_file(tmp_path):
    x, y = shapes(2)
    write_folder(tmp_path, x, y)
    bad = tmp_path / "cross" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert str(bad) in refused(tmp_path, "not a readable image")


def test_refuses_a_corrupt_npz(tmp_path):
    bad = tmp_path / "cut.npz"
    x, y = shapes(2)
    np.savez(bad, x=x, y=y)
    bad.write_bytes(bad.read_bytes()[:300])
    assert str(bad) in refused(bad, "not a readable .npz")


def test_refuses_labels_out_of_range(tmp_path):
    x, y = shapes(2)
    np.savez(tmp_path / "r.npz", x=x, y=np.where(y == 2, 3, y), class_names=np.array(CLASSES))
    assert str(tmp_path / "r.npz") in refused(tmp_path / "r.npz", "label 3 in y is out of range")
    np.savez(tmp_path / "neg.npz", x=x, y=y - 1)
    refused(tmp_path / "neg.npz", "label -1 in y is out of range")


def test_refuses_labels_that_are_not_integers(tmp_path):
    x, y = shapes(2)
    np.savez(tmp_path / "f.npz", x=x, y=y + 0.5)
    assert str(tmp_path / "f.npz") in refused(tmp_path / "f.npz", "dtype float64; labels must be integers")


def test_refuses_x_and_y_of_different_lengths(tmp_path):
    x, y = shapes(2)
    np.savez(tmp_path / "n.npz", x=x, y=y[:-1])
    assert str(tmp_path / "n.npz") in refused(tmp_path / "n.npz", r"y has shape \(5,\) but x holds 6")


def test_refuses_files_over_the_size_bound(tmp_path, monkeypatch):
    x, y = shapes(2)
    write_folder(tmp_path / "f", x, y)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    monkeypatch.setattr(lvdata, "MAX_IMAGE_PIXELS", 100)
    assert "12x12 pixels is more than the 100 allowed" in refused(tmp_path / "f", r"\.png: ")
    monkeypatch.setattr(lvdata, "MAX_IMAGE_FILE_BYTES", 60)
    assert "larger than the" in refused(tmp_path / "f", r"\.png: \d+ bytes")
    monkeypatch.setattr(lvdata, "MAX_DATA_BYTES", 1000)
    assert str(tmp_path / "a.npz") in refused(tmp_path / "a.npz", "larger than the")


def test_refuses_float_images_outside_0_1(tmp_path):
    x, y = shapes(2)
    np.savez(tmp_path / "u.npz", x=x.astype(np.float32), y=y)
    refused(tmp_path / "u.npz", r"float but not all in \[0, 1\]")


# ----------------------------------------------------------------------------- models

@pytest.mark.parametrize("variant", list(lv.VARIANTS))
def test_every_variant_trains_on_colour_images_and_on_sizes_other_than_28(forms, variant):
    for path, likelihood in ((forms["folder"], "gaussian"), (forms["grey"], "bernoulli")):
        data = load_dataset(str(path))
        model = tiny_model(variant, data, backbone="auto", likelihood=likelihood)
        history = train_model(model, data, lv.TrainConfig(epochs=1, batch_size=16, seed=0))
        last = history.train[-1]
        assert "recon" in last and all(np.isfinite(v) for v in last.values()), (variant, last)
        with torch.no_grad():
            out = model.reconstruct(data.x_test[:4], data.y_test[:4])
        assert out.shape == (4, *data.image_shape)


def test_auto_backbone_is_conv_where_the_size_allows():
    conv = lv.VARIANTS["vae"].config(image_shape=(3, 12, 12), backbone="auto")
    mlp = lv.VARIANTS["vae"].config(image_shape=(1, 10, 10), backbone="auto")
    assert conv.resolved_backbone == "conv" and mlp.resolved_backbone == "mlp"


def test_gaussian_likelihood_is_the_squared_error():
    logits, x = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    want = ((torch.sigmoid(logits) - x) ** 2).sum(dim=(1, 2, 3))
    assert torch.allclose(recon_sse(logits, x), want)


# ----------------------------------------------------------------------------- CLI and app

RECIPES = {"folder": ["--variant", "vae", "--likelihood", "gaussian"],
           "npz": ["--variant", "treevae", "--schedule", "tiny", "--hidden", "16",
                   "--node-latent-dim", "2", "--max-depth", "2", "--min-samples-split", "8"],
           "grey": ["--variant", "lambda_hot", "--latent-dim", "4"]}


@pytest.fixture(scope="module")
def trained(forms, tmp_path_factory) -> dict[str, Path]:
    """A checkpoint per form, trained from the CLI (2 epochs)."""
    out = tmp_path_factory.mktemp("own_ckpts")
    paths = {}
    for form, args in RECIPES.items():
        paths[form] = out / f"{form}.safetensors"
        rc = main(["train", "--dataset", str(forms[form]), "--epochs", "2", "--hidden", "16",
                   "--batch-size", "16", "--classifiers", "logreg", "--out", str(paths[form]),
                   *args])
        assert rc == 0, form
    return paths


@pytest.mark.parametrize("form", list(RECIPES))
def test_trains_and_evaluates_from_the_cli(trained, forms, form, capsys):
    meta = read_meta(trained[form]).meta
    src = meta["dataset_source"]
    assert src["path"] == str(Path(forms[form]).resolve()) == meta["dataset"]
    assert sum(src["images_per_class"]["train"]) > 0 and len(src["sha256"]) == 64
    recon = "test_recon_sse" if form == "folder" else "test_recon"
    assert recon in meta["metrics"] and ("test_recon" in meta["metrics"]) == (form != "folder")
    capsys.readouterr()
    assert main(["eval", str(trained[form]), "--json", "--classifiers", "logreg"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["metrics"][recon] == pytest.approx(meta["metrics"][recon], rel=1e-5)


def test_eval_says_when_the_dataset_moved_and_reopens_it_at_its_new_place(trained, forms,
                                                                          tmp_path, capsys):
    moved = tmp_path / "elsewhere.npz"
    moved.write_bytes(Path(forms["npz"]).read_bytes())
    meta = dict(read_meta(trained["npz"]).meta)
    meta["dataset_source"] = {**meta["dataset_source"], "path": str(tmp_path / "gone.npz")}
    with pytest.raises(DatasetError, match="gone.npz, which is no longer there"):
        lvdata.dataset_for(meta)
    assert lvdata.dataset_for(meta, path=moved).n_classes == 3
    assert main(["eval", str(trained["npz"]), "--dataset", str(moved), "--no-classifiers"]) == 0


def test_a_changed_dataset_is_refused_for_its_checkpoint(trained, forms, tmp_path):
    x, y = shapes(10)
    x[0, 0, 0] = 255  # one pixel
    np.savez(tmp_path / "shapes.npz", x=x, y=y, class_names=np.array(CLASSES))
    meta = read_meta(trained["npz"]).meta
    with pytest.raises(DatasetError, match="has changed since this checkpoint.*same number"):
        lvdata.dataset_for(meta, path=tmp_path / "shapes.npz")
    np.savez(tmp_path / "fewer.npz", x=x[1:], y=y[1:], class_names=np.array(CLASSES))
    with pytest.raises(DatasetError, match=r"images per class then .*now"):
        lvdata.dataset_for(meta, path=tmp_path / "fewer.npz")


@pytest.fixture()
def app_folders(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTVIZ_CHECKPOINTS", str(next(iter(trained.values())).parent))
    monkeypatch.setenv("LATENTVIZ_RUNS", str(tmp_path))
    return tmp_path


def errors(at: AppTest) -> list[str]:
    out = [e.message for e in at.exception]
    return out + [str(e.value) for e in at.error]


@pytest.mark.parametrize("form", list(RECIPES))
def test_every_page_opens_a_checkpoint_of_your_own_images(trained, app_folders, form):
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state[state.CHECKPOINT] = str(trained[form])
    at.run()
    assert not errors(at), errors(at)
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not errors(at), (page, errors(at))
        assert at.sidebar.selectbox[0].value == str(trained[form]), page
        if page == "Samples":  # this model's samples in colour where its dataset is
            grid = next(read_grid(e.proto.body) for e in at.get("html")
                        if 'data-lv="grid"' in e.proto.body)
            assert grid.images[0].mode == ("L" if form == "grey" else "RGB")


def test_the_app_says_when_a_checkpoints_images_have_moved(trained, forms, app_folders, tmp_path):
    src = Path(forms["grey"])
    hidden = src.with_name("grey-moved")
    src.rename(hidden)
    ui_cache._own_dataset.clear()  # a dataset opened by an earlier test stays in the cache
    try:
        at = AppTest.from_file(APP, default_timeout=180)
        at.session_state[state.CHECKPOINT] = str(trained["grey"])
        at.run()
        at.switch_page("pages/Latent_space.py").run()
        assert "no longer there" in " ".join(str(e.value) for e in at.error)
    finally:
        hidden.rename(src)


@pytest.mark.parametrize("form", list(RECIPES))
def test_the_train_page_trains_on_a_path(forms, app_folders, form):
    # The page script itself: a click after AppTest.switch_page is lost (streamlit 1.5x)
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "Train.py"), default_timeout=180)
    at.run()
    at.selectbox[0].set_value("your own images (a path)").run()
    at.text_input(key="train.own_path").set_value(str(forms[form])).run()
    assert not errors(at), errors(at)
    size = {"folder": 8, "npz": 0, "grey": 0}[form]  # 0: as found
    at.number_input(key="train.own_size").set_value(size).run()
    at.number_input(key="model.vae.own.hidden").set_value(16)
    at.number_input(key="train.epochs").set_value(1)
    at.number_input(key="train.batch_size").set_value(16).run()
    assert at.selectbox(key="model.vae.own.backbone").value == "auto"
    assert not errors(at), errors(at)
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state[state.JOB]
    assert job.wait(180) and job.status == "done", job.snapshot()
    meta = read_meta(app_folders / f"{Path(forms[form]).stem}-vae-seed0.safetensors").meta
    assert meta["dataset_source"]["path"] == str(Path(forms[form]).resolve())
    assert meta["dataset_source"]["image_size"] == (size or None)
    assert meta["config"]["image_shape"][1:] == ([8, 8] if size else [12, 12] if form != "grey"
                                                 else [10, 10])
    at.run()
    assert not errors(at), errors(at)


def test_a_run_on_your_own_images_resumes_and_refuses_them_changed(forms, tmp_path):
    from latentviz.runs import RunSpec, resume, run_training

    npz = tmp_path / "mine.npz"
    npz.write_bytes(Path(forms["npz"]).read_bytes())
    spec = RunSpec("vae", str(npz), {"hidden": 16, "latent_dim": 4},
                   lv.TrainConfig(epochs=1, batch_size=16), tmp_path / "r.safetensors",
                   image_size=8)
    run_training(spec, classifiers=())
    meta = read_meta(resume(spec.out, extra_epochs=1, classifiers=()).path).meta
    assert meta["epochs"] == 2 and meta["config"]["image_shape"] == [3, 8, 8]
    assert meta["dataset_source"]["image_size"] == 8
    x, y = shapes(10)
    np.savez(npz, x=x[::-1], y=y[::-1], class_names=np.array(CLASSES))  # same counts, reordered
    with pytest.raises(DatasetError, match="has changed since this checkpoint"):
        resume(spec.out, extra_epochs=1, classifiers=())
