"""Bad input never crashes, hangs or poisons the app (issue #11), class by class.

Property tests put arbitrary JSON values at every field of a real checkpoint's header,
arbitrary bytes in the header and arbitrary bytes into the Encode upload; each input must
give a clear error (CheckpointError / UploadError) or a valid result, within a time bound.
Then one test per class of hostile input, and the app over a runs folder full of them.
"""
from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import latentviz as lv
from latentviz import checkpoints
from latentviz.checkpoints import CheckpointError, list_checkpoints, load, read_meta, store_upload
from latentviz.models import ConfigError
from latentviz.ui.upload import PNG_SIGNATURE, UploadError, load_image_upload, read_upload

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CHEAP = settings(PROPERTY, max_examples=150)   # milliseconds per example
SECONDS = 5.0      # per hostile input, on a shared two-core machine; typical is milliseconds
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers

def split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(header: dict | bytes, data: bytes) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def meta_of(blob: bytes) -> dict:
    return json.loads(split(blob)[0]["__metadata__"]["latentviz"])


def with_meta(blob: bytes, edit) -> bytes:
    """The checkpoint with its latentviz metadata passed through ``edit(meta)``; ``edit``
    may return raw text to store instead of the JSON of the edited dict."""
    header, data = split(blob)
    meta = json.loads(header["__metadata__"]["latentviz"])
    text = edit(meta)
    header["__metadata__"]["latentviz"] = text if isinstance(text, str) else json.dumps(meta)
    return join(header, data)


def field_paths(meta, prefix=()) -> list[tuple]:
    """Every field of a metadata document (lists: their first entry), as key paths."""
    out = [prefix] if prefix else []
    if isinstance(meta, dict):
        for k, v in meta.items():
            out += field_paths(v, prefix + (k,))
    elif isinstance(meta, list) and meta:
        out += field_paths(meta[0], prefix + (0,))
    return out


def put(meta, path, value):
    obj = meta
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def bounded(fn, *args):
    """fn(*args) -> (result or exception, seconds)."""
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the caller judges the exception's type
        out = exc
    return out, time.perf_counter() - t0


def check_reads(blob: bytes, what: str) -> None:
    """Every reader of a checkpoint sees a valid header or a CheckpointError, in time."""
    for reader in (lambda b: load(b, name="fuzz"), lambda b: checkpoints.read_header(b, "fuzz")):
        out, seconds = bounded(reader, blob)
        assert seconds < SECONDS, f"{what}: {seconds:.1f} s"
        if isinstance(out, Exception):
            assert isinstance(out, CheckpointError), f"{what}: {type(out).__name__}: {out}"
            assert str(out).startswith("fuzz"), str(out)
    if not isinstance(out, Exception):  # a header that reads: its views hold
        view = checkpoints.Checkpoint(Path("fuzz.safetensors"), out[1])
        assert isinstance(view.variant, str) and isinstance(view.dataset, str)
        assert isinstance(view.epochs, int) and view.epochs >= 0
        assert all(isinstance(v, float) for v in view.metrics.values())


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def vae_partial(digits, tmp_path_factory) -> bytes:
    """An interrupted VAE run's checkpoint: history, train config, Adam's state."""
    from conftest import TINY_TRAIN, tiny_model
    model = tiny_model("vae", digits)
    opt = lv.train.adam(model.parameters(), TINY_TRAIN)
    history = lv.fit(model, digits, TINY_TRAIN.replace(epochs=1), optimizer=opt)
    path = tmp_path_factory.mktemp("hostile") / "v.partial.safetensors"
    return lv.save(path, model, dataset="digits", train_config=TINY_TRAIN, history=history,
                   optimizer=opt, metrics={"test_recon": 30.0, "acc": float("nan")},
                   made={"command": "x", "seconds": 1.0, "n_train": None}).read_bytes()


@pytest.fixture(scope="module")
def tree_blob(tiny_checkpoints) -> bytes:
    return tiny_checkpoints["treevae"].read_bytes()


# ----------------------------------------------------------------------------- properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.just(-10 ** 400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)


def test_property_any_json_at_any_field(vae_partial, tree_blob):
    """Arbitrary JSON (NaN, Infinity, null, huge numbers, lists for tables) at every field
    of a VAE partial checkpoint and of a TreeVAE's (its topology): a clear error or a valid
    checkpoint, within the time bound, and memory stays flat."""
    rss = max_rss_mb()
    bases = {"vae": vae_partial, "treevae": tree_blob}
    paths = [(name, p) for name, blob in bases.items() for p in field_paths(meta_of(blob))]
    assert len(paths) > 100  # every field, nested ones included

    @settings(PROPERTY, max_examples=100)
    @given(st.sampled_from(paths), JSON)
    def prop(where, value):
        name, path = where
        check_reads(with_meta(bases[name], lambda m: put(m, path, value)), f"{name} {path}")

    prop()
    assert max_rss_mb() - rss < 500


@CHEAP
@given(st.binary(max_size=3000) | st.text(max_size=400).map(str.encode)
       | st.integers(1, 100000).map(lambda n: b"[" * n))
def test_property_any_bytes_as_the_header(vae_partial, head):
    _, data = split(vae_partial)
    check_reads(join(head, data), "bytes as header")


@CHEAP
@given(st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8))
def test_property_any_bytes_in_the_header(vae_partial, at, junk):
    n = struct.unpack("<Q", vae_partial[:8])[0]
    pos = 8 + at % n
    check_reads(vae_partial[:pos] + junk + vae_partial[pos + len(junk):], "bytes in header")


@CHEAP
@given(JSON.map(json.dumps) | st.text(max_size=200))
def test_property_any_text_as_the_metadata(vae_partial, text):
    check_reads(with_meta(vae_partial, lambda m: text), "metadata text")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def _png(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


IMAGE_BYTES = (
    st.binary(max_size=4096)
    | st.binary(max_size=2048).map(lambda b: PNG_SIGNATURE + b)
    | st.binary(max_size=2048).map(lambda b: b"\xff\xd8\xff\xe0" + b)
    | st.tuples(st.integers(0, 2 ** 31 - 1), st.integers(0, 2 ** 31 - 1),
                st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([0, 2, 3, 4, 6]),
                st.binary(max_size=512)).map(
        lambda t: PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", t[0], t[1], t[2],
                                                                  t[3], 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(t[4])) + _png_chunk(b"IEND", b""))
    | st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(0, 120)).map(
        lambda t: (lambda b: b[: len(b) - t[2]])(_png(np.full((t[0], t[1]), 7, np.uint8)))))


@CHEAP
@given(IMAGE_BYTES)
def test_property_any_bytes_as_an_encode_upload(data):
    """The Encode page's upload: an image (L or RGB) or an UploadError, never another
    exception, quickly."""
    out, seconds = bounded(load_image_upload, data, "x.png")
    assert seconds < SECONDS
    if isinstance(out, Exception):
        assert isinstance(out, UploadError), f"{type(out).__name__}: {out}"
    else:
        assert out.mode in ("L", "RGB") and out.size[0] * out.size[1] <= 2048 * 2048
        assert read_upload(data).ndim == 2


# ----------------------------------------------------------------------------- class 1

@pytest.mark.parametrize("path,value,says", [
    (("epochs",), "12", "epochs"), (("epochs",), -1, "epochs"), (("epochs",), None, "epochs"),
    (("metrics", "test_recon"), 10 ** 400, "metrics.test_recon"),
    (("metrics",), [1, 2], "metrics"), (("metrics", "test_recon"), "30", "metrics.test_recon"),
    (("variant",), ["vae"], "variant"), (("dataset",), 7, "dataset"),
    (("made",), "yesterday", "made"), (("made", "seconds"), -5, "made.seconds"),
    (("history", "train"), {"recon": 1}, "history.train"),
    (("history", "train", 0, "recon"), "x", "history.train[0].recon"),
    (("config", "image_shape"), [1, "8", 8], "config.image_shape[1]"),
    (("config", "image_shape"), [1, 8.0, 8], "config.image_shape[1]"),
    (("config", "hidden"), True, "config.hidden"), (("config", "latent_dim"), 2.5, "latent_dim"),
    (("train_config", "lr"), "fast", "train_config.lr"),
    (("optimizer", "param_groups"), {}, "optimizer.param_groups"),
    (("optimizer", "param_groups", 0, "lr"), -1, "optimizer.param_groups[0].lr"),
    (("optimizer", "scalars"), [], "optimizer.scalars"),
    (("weights_dtype",), "int8", "weights_dtype"), (("extra",), {"tree": 1}, "extra"),
    (("format_version",), True, "format version"),
])
def test_class1_every_field_is_typed_and_named(vae_partial, path, value, says):
    blob = with_meta(vae_partial, lambda m: put(m, path, value))
    with pytest.raises(CheckpointError, match=f"^fuzz: .*{say_re(says)}"):
        load(blob, name="fuzz")


def say_re(text: str) -> str:
    import re
    return re.escape(text)


def test_class1_nan_and_infinity_never_reach_a_reader(vae_partial):
    for token in ("NaN", "Infinity", "-Infinity", "1e999"):
        blob = with_meta(vae_partial, lambda m: json.dumps(m).replace(
            '"test_recon": 30.0', f'"test_recon": {token}'))
        with pytest.raises(CheckpointError, match="not valid JSON"):
            read_meta_bytes(blob)
    # a metric that could not be computed is stored as null and read as NaN
    assert meta_of(vae_partial)["metrics"]["acc"] is None
    assert np.isnan(load(vae_partial)[1].metrics["acc"])


def read_meta_bytes(blob: bytes):
    return checkpoints.read_header(blob, "fuzz")


def test_class1_the_tree_topology_is_typed(tree_blob):
    for edit in (lambda m: put(m, ("extra", "tree", "nodes", 0, "id"), "0"),
                 lambda m: put(m, ("extra", "tree", "nodes"), {}),
                 lambda m: put(m, ("extra", "tree", "nodes", 0, "children"), [1, 2, 3]),
                 lambda m: put(m, ("extra", "schedule"), {"next": "grow"})):
        with pytest.raises(CheckpointError, match="extra"):
            load(with_meta(tree_blob, edit), name="fuzz")


# ----------------------------------------------------------------------------- class 2

def test_class2_deep_nesting_and_huge_sizes_are_refused_quickly(vae_partial, tree_blob):
    deep = [("[" * 200_000, "nests deeper"), ('{"a":' * 100_000 + "1" + "}" * 100_000,
                                              "nests deeper")]
    for text, says in deep:
        for blob in (with_meta(vae_partial, lambda m: text), join(text.encode(), b"")):
            out, seconds = bounded(load, blob)
            assert isinstance(out, CheckpointError) and says in str(out) and seconds < 1.0, out
    huge_model = [
        lambda m: m["config"].update(hidden=4096, latent_dim=512),       # 20M+ parameters
        lambda m: m["config"].update(image_shape=[3, 4096, 4096]),       # not the dataset's
        lambda m: m["config"].update(n_classes=10 ** 9),
        lambda m: put(m, ("history", "train"), [{}] * 10),
    ]
    for edit in huge_model:
        rss = max_rss_mb()
        out, seconds = bounded(load, with_meta(vae_partial, edit))
        assert isinstance(out, CheckpointError) and seconds < 1.0, (out, seconds)
        assert max_rss_mb() - rss < 100
    # a TreeVAE asking for hundreds of nodes is refused before a module is built
    meta = meta_of(tree_blob)
    nodes = [{"id": 0, "parent": None, "depth": 0, "children": [1, 2]}]
    for i in range(1, 2047):
        kids = [2 * i + 1, 2 * i + 2] if i < 1023 else []
        nodes.append({"id": i, "parent": (i - 1) // 2, "depth": int(np.log2(i + 1)),
                      "children": kids})
    big = with_meta(tree_blob, lambda m: m["extra"]["tree"].update(nodes=nodes, next_id=2047))
    out, seconds = bounded(load, big)
    assert isinstance(out, CheckpointError) and "extra.tree.nodes" in str(out), out
    assert seconds < 1.0
    assert len(meta["extra"]["tree"]["nodes"]) < 100


# ----------------------------------------------------------------------------- class 3

def hostile_folder(folder: Path, good: bytes) -> dict[str, Path]:
    """A folder of files that are not checkpoints, named like them, beside a good one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.safetensors").write_bytes(good)
    made = {}
    made["fifo"] = folder / "fifo.safetensors"
    os.mkfifo(made["fifo"])
    made["dir"] = folder / "dir.safetensors"
    made["dir"].mkdir()
    made["loop"] = folder / "loop.safetensors"
    os.symlink(made["loop"].name, made["loop"])
    made["dangling"] = folder / "dangling.safetensors"
    os.symlink("nowhere", made["dangling"])
    made["device"] = folder / "device.safetensors"
    os.symlink("/dev/zero", made["device"])
    made["garbage"] = folder / "garbage.safetensors"
    made["garbage"].write_bytes(os.urandom(2048))
    made["unreadable"] = folder / "unreadable.safetensors"
    made["unreadable"].write_bytes(good)
    made["unreadable"].chmod(0)
    made["huge"] = folder / "huge.safetensors"
    made["huge"].write_bytes(with_meta(good, lambda m: m["config"].update(hidden=4096)))
    made["fifo_partial"] = folder / "fifo2.partial.safetensors"
    os.mkfifo(made["fifo_partial"])
    made["dir_partial"] = folder / "dir2.partial.safetensors"
    made["dir_partial"].mkdir()
    return made


def in_thread(fn, timeout: float = 10.0):
    """fn() in a daemon thread: (result, False), or (None, True) if it hangs."""
    box = []
    t = threading.Thread(target=lambda: box.append(bounded(fn)[0]), daemon=True)
    t.start()
    t.join(timeout)
    return (box[0] if box else None), not box


def test_class3_files_that_are_not_regular_never_hang_or_hide_the_others(
        tiny_checkpoints, tmp_path):
    good = tiny_checkpoints["vae"].read_bytes()
    made = hostile_folder(tmp_path, good)
    found, hung = in_thread(lambda: list_checkpoints(tmp_path, partial=True))
    assert not hung, "list_checkpoints hung"
    by_name = {c.path.name: c for c in found}
    assert by_name["good.safetensors"].error is None
    for kind, p in made.items():
        if kind == "unreadable" and os.geteuid() == 0:
            continue  # root reads it anyway
        assert by_name[p.name].error, kind
        out, hung = in_thread(lambda: load(p))
        assert not hung and isinstance(out, CheckpointError), (kind, out)
    assert "FIFO" in by_name["fifo.safetensors"].error
    assert "directory" in by_name["dir.safetensors"].error
    assert "symbolic links" in by_name["loop.safetensors"].error
    assert "device" in by_name["device.safetensors"].error


# ----------------------------------------------------------------------------- class 4

def test_class4_metadata_contradicting_the_weights_or_itself_is_refused_at_load(
        vae_partial, tiny_checkpoints, tmp_path):
    cases = {
        "mnist images in a digits model": (lambda m: put(m, ("dataset",), "mnist"),
                                           "image_shape"),
        "unknown dataset": (lambda m: put(m, ("dataset",), "cifar"), "dataset"),
        "variant without its tensors": (lambda m: put(m, ("variant",), "branched"), "missing"),
        "variant with other tensors": (lambda m: put(m, ("variant",), "kmeans"), "missing centres"),
        "epochs against history": (lambda m: put(m, ("epochs",), 7), "epochs 7"),
        "seed against train_config": (lambda m: put(m, ("seed",), 9), "seed 9"),
        "half-precision claim": (lambda m: put(m, ("weights_dtype",), "float16"), "F16"),
        "optimizer ids": (lambda m: put(m, ("optimizer", "param_groups", 0, "params"), [0]),
                          "optimizer.param_groups"),
        "history lengths": (lambda m: m["history"]["seconds"].append(1.0), "differ in length"),
    }
    for name, (edit, says) in cases.items():
        with pytest.raises(CheckpointError, match=say_re(says)):
            load(with_meta(vae_partial, edit))
    # the header alone says so: the listing flags such a file, so no page opens it
    folder = tmp_path / "list"
    folder.mkdir()
    (folder / "mnist-lie.safetensors").write_bytes(with_meta(vae_partial, cases[
        "mnist images in a digits model"][0]))
    assert "image_shape" in list_checkpoints(folder)[0].error
    # the same tensors under another variant's name: its config gives it away
    lh = tiny_checkpoints["lambda_hot"].read_bytes()
    with pytest.raises(CheckpointError, match="config.lam"):
        load(with_meta(lh, lambda m: put(m, ("variant",), "vae")))


# ----------------------------------------------------------------------------- class 5

def test_class5_uploads_are_checked_whole_and_never_overwrite(vae_partial, tiny_checkpoints,
                                                               tmp_path):
    good = tiny_checkpoints["vae"].read_bytes()
    # a name cannot make an upload pass for an interrupted run
    stored = store_upload(good, "../x.partial.safetensors", tmp_path)
    assert not stored.name.endswith(".partial.safetensors") and stored.parent == tmp_path
    # weights that load but blow up every view are refused, nothing written
    header, data = split(good)
    model, _ = load(good)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3e38)
    import safetensors.torch as sft
    bad = sft.save({k: v.contiguous() for k, v in model.state_dict().items()},
                   metadata=header["__metadata__"])
    before = sorted(tmp_path.iterdir())
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        store_upload(bad, "bad.safetensors", tmp_path)
    assert sorted(tmp_path.iterdir()) == before
    # eight uploads of one name at once, five each: forty files, none lost
    folder = tmp_path / "many"
    errors = []

    def upload():
        for _ in range(5):
            try:
                store_upload(good, "same.safetensors", folder)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = sorted(folder.glob("*.safetensors"))
    assert len(files) == 40 and all(f.read_bytes() == good for f in files)
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("name,data,says", [
    ("bomb.png", PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0,
                                                                  0, 0, 0)), "pixels"),
    ("big.png", PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4000, 4000, 8, 0,
                                                                 0, 0, 0)), "pixels"),
    ("text.png", (lambda g: g[:33] + _png_chunk(b"zTXt", b"c\0\0" + zlib.compress(
        b"\0" * 50_000_000, 9)) + g[33:])(_png(np.zeros((28, 28), np.uint8))), "text metadata"),
    ("strip.png", _png(np.zeros((1, 600), np.uint8)), "long and thin"),
    ("cut.png", _png(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:300],
     "truncated"),
    ("gif.png", b"GIF89a" + b"\0" * 100, "PNG or JPEG"),
])
def test_class5_image_uploads_give_a_message(name, data, says):
    out, seconds = bounded(read_upload, data, name)
    assert isinstance(out, UploadError) and says in str(out), out
    assert seconds < 1.0


# ----------------------------------------------------------------------------- class 6

def test_class6_the_command_line_says_one_error_line(tmp_path, monkeypatch, capsys):
    from latentviz.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.safetensors").write_text("my notes")
    (tmp_path / "adir.safetensors").mkdir()
    (tmp_path / "afile").write_text("x")
    train = ["train", "--variant", "vae", "--epochs", "1", "--no-classifiers"]
    cases = [
        (train + ["--out", "adir.safetensors"], "directory"),
        (train + ["--out", "afile/x.safetensors"], "afile is not a folder"),
        (train + ["--out", "notes.safetensors"], "not overwritten"),
        (train + ["--seed", str(2 ** 40)], "seed"),
        (train + ["--device", "tpu"], "device"),
        (train + ["--device", "cuda:99"], "device"),
        (["train", "--variant", "kmeans", "--n-clusters", "500", "--n-train", "100",
          "--epochs", "1", "--no-classifiers", "--out", "k.safetensors"], "n_clusters"),
        (["eval", "adir.safetensors"], "directory"),
        (["eval", "notes.safetensors", "--device", "cuda:99"], "device"),
        (["resume", "notes.safetensors"], "not a safetensors"),
        (["train", "--variant", "vae", "--no-such-flag"], "unrecognized"),
        (["resume", "x.safetensors", "--epochs", "1.5"], "invalid int"),
    ]
    for args, says in cases:
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse's own exit, after its one line
            rc = exc.code
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert rc == 2, (args, rc, err)
        assert len(lines) == 1 and says in lines[0], (args, err)
        assert "Traceback" not in err, args
    assert (tmp_path / "notes.safetensors").read_text() == "my notes"
    assert not (tmp_path / "runs").exists()
    assert main(["--debug", "eval", "adir.safetensors"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- class 7

def test_class7_an_overflowing_weighted_term_is_named_with_its_setting(digits):
    from conftest import TINY_TRAIN, tiny_model
    model = tiny_model("lambda_hot", digits, beta=1e35, lam=100.0)   # KL ~ 5e3, finite
    with pytest.raises(lv.train.TrainingDiverged) as err:
        lv.fit(model, digits, TINY_TRAIN.replace(epochs=1))
    text = str(err.value)
    assert "beta * kl overflowed" in text and "lower beta" in text, text
    assert "learning rate" not in text


# ----------------------------------------------------------------------------- class 8

def test_class8_resume_checks_what_it_resumes(vae_partial, tmp_path):
    from latentviz.runs import resume

    def saved(blob, name="r.partial.safetensors"):
        p = tmp_path / name
        p.write_bytes(blob)
        return p
    for field, says in (("train_config", "no train_config"), ("history", "no history"),
                        ("optimizer", "without its optimizer")):
        def drop(m, field=field):
            m[field] = None
            if field == "history":
                m["epochs"] = 0
            if field == "optimizer":  # its tensors go with it
                return None
        blob = with_meta(vae_partial, drop)
        if field == "optimizer":
            header, data = split(blob)
            keep = {k: v for k, v in header.items() if not k.startswith("optim.")}
            model, _ = load(vae_partial)
            import safetensors.torch as sft
            blob = sft.save({k: v.contiguous() for k, v in model.state_dict().items()},
                            metadata=keep["__metadata__"])
        with pytest.raises(CheckpointError, match=says):
            resume(saved(blob), classifiers=())
    for mistyped in (lambda m: put(m, ("train_config",), "fast"),
                     lambda m: put(m, ("history", "train"), None),
                     lambda m: put(m, ("optimizer", "scalars"), {"0": {"step": "one"}})):
        with pytest.raises(CheckpointError):
            resume(saved(with_meta(vae_partial, mistyped)), classifiers=())
    for extra in (-1, 0, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="epochs"):
            resume(saved(vae_partial), extra, classifiers=())


# ----------------------------------------------------------------------------- the app

def test_the_app_renders_every_page_over_a_hostile_runs_folder(tiny_checkpoints, tmp_path,
                                                               monkeypatch):
    """FIFOs, directories, symlink loops, devices, garbage and a huge-model header in the
    runs folder: every page renders, Home names each of them, the Train page names the
    partial ones as not resumable, and the good checkpoints stay usable."""
    from streamlit.testing.v1 import AppTest

    good = tiny_checkpoints["vae"].read_bytes()
    runs = tmp_path / "runs"
    made = hostile_folder(runs, good)
    (runs / "good.safetensors").unlink()  # the shipped folder holds the good ones
    monkeypatch.setenv("LATENTVIZ_CHECKPOINTS", str(tiny_checkpoints["vae"].parent))
    monkeypatch.setenv("LATENTVIZ_RUNS", str(runs))

    def clean(at):
        assert not at.exception, "\n".join(e.message for e in at.exception)

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    clean(at)
    warned = "\n".join(str(w.value) for w in at.warning)
    for kind, p in made.items():
        if "partial" in kind or (kind == "unreadable" and os.geteuid() == 0):
            continue
        assert p.name in warned, (kind, warned)
    pages = ["Train", "Latent_space", "Samples", "TreeVAE", "Compare", "Encode"]
    for page in pages:
        at.switch_page(f"pages/{page}.py").run()
        clean(at)
        if page == "Train":
            text = "\n".join(str(w.value) for w in at.warning)
            assert "fifo2.partial.safetensors" in text and "dir2.partial.safetensors" in text
        if page == "Latent_space":  # a good checkpoint is still shown
            assert at.get("plotly_chart")
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    fresh.run()  # a new session starts cleanly too
    clean(fresh)
