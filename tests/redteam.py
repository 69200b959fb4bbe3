"""Hostile inputs of issue #11, counted per class: ``python tests/redteam.py``.

Not a pytest module (tests/test_hostile.py holds the tests); this enumerates many more
cases than the suite runs and prints, per class, how many were tried and how many were
handled: a clear error of the documented type (or a valid result) within the time bound,
no hang, no other exception.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import latentviz as lv  # noqa: E402
from latentviz import checkpoints  # noqa: E402
from latentviz.checkpoints import CheckpointError, list_checkpoints, load, store_upload  # noqa: E402
from latentviz.models import ConfigError  # noqa: E402
from latentviz.ui.upload import PNG_SIGNATURE, UploadError, read_upload  # noqa: E402
from test_hostile import field_paths, join, meta_of, put, split, with_meta  # noqa: E402

SECONDS = 5.0
RESULTS: dict[str, list[tuple[str, bool, str]]] = {}


def record(cls: str, name: str, ok: bool, detail: str = "") -> None:
    RESULTS.setdefault(cls, []).append((name, ok, detail))


def run(fn, timeout=SECONDS * 3):
    """(outcome, seconds, hung): outcome is the value or the exception."""
    box = []

    def target():
        t0 = time.perf_counter()
        try:
            box.append((fn(), time.perf_counter() - t0))
        except BaseException as exc:  # noqa: BLE001
            box.append((exc, time.perf_counter() - t0))
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        return None, timeout, True
    return box[0][0], box[0][1], False


def handled(outcome, seconds, hung, allowed=(CheckpointError,), ok_values=True) -> tuple[bool, str]:
    if hung:
        return False, "hung"
    if seconds > SECONDS:
        return False, f"{seconds:.1f} s"
    if isinstance(outcome, BaseException):
        return isinstance(outcome, allowed), f"{type(outcome).__name__}: {str(outcome)[:120]}"
    return ok_values, "accepted"


def check_blob(cls, name, blob, must_refuse=False):
    out, s, hung = run(lambda: load(blob, name="case"))
    ok, detail = handled(out, s, hung, ok_values=not must_refuse)
    if ok and not isinstance(out, BaseException):  # valid: its views hold
        view = out[1]
        try:
            ok = (isinstance(view.epochs, int) and isinstance(view.variant, str)
                  and all(isinstance(v, float) for v in view.metrics.values()))
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"its views fail: {type(exc).__name__}: {exc}"
    record(cls, name, ok, detail)


def base_files(tmp: Path):
    from conftest import TINY_TRAIN, tiny_model
    digits = lv.load_dataset("digits")
    model = tiny_model("vae", digits)
    opt = lv.train.adam(model.parameters(), TINY_TRAIN)
    hist = lv.fit(model, digits, TINY_TRAIN.replace(epochs=1), optimizer=opt)
    vae = lv.save(tmp / "v.partial.safetensors", model, dataset="digits",
                  train_config=TINY_TRAIN, history=hist, optimizer=opt,
                  metrics={"test_recon": 30.0}, made={"seconds": 1.0}).read_bytes()
    tree = tiny_model("treevae", digits)
    th = lv.train.train_model(tree, digits, TINY_TRAIN)
    treeb = lv.save(tmp / "t.safetensors", tree, dataset="digits", train_config=TINY_TRAIN,
                    history=th).read_bytes()
    return digits, vae, treeb


VALUES = [None, "x", [], {}, True, -1, 1e308, 10 ** 30, 10 ** 400, [[[[1]]]], {"a": {"b": 1}}]


def class1(vae, tree):
    for base, name, paths in ((vae, "vae", field_paths(meta_of(vae))),
                              (tree, "treevae", [p for p in field_paths(meta_of(tree))
                                                 if p[0] in ("extra", "config", "variant",
                                                             "epochs", "metrics")])):
        for path in paths:
            for v in VALUES:
                check_blob("1 header values", f"{name} {path}={v!r:.20}",
                           with_meta(base, lambda m: put(m, path, v)))
        for token in ("NaN", "Infinity", "-Infinity", "1e999"):
            text = json.dumps(meta_of(base)).replace('"epochs": ', f'"epochs": {token}, "x": ', 1)
            check_blob("1 header values", f"{name} epochs={token}",
                       with_meta(base, lambda m: text), must_refuse=True)


def class2(vae, tree):
    c = "2 sizes"
    for n in (1000, 100_000, 5_000_000):
        for text in ("[" * n, '{"a":' * n + "1" + "}" * n):
            check_blob(c, f"depth {n} meta", with_meta(vae, lambda m: text), must_refuse=True)
            check_blob(c, f"depth {n} header", join(text.encode(), split(vae)[1]), must_refuse=True)
        check_blob(c, f"depth {n} in metrics", with_meta(vae, lambda m: json.dumps(m).replace(
            '"metrics": {', '"metrics": {"deep": ' + "[" * n + "]" * n + ", ", 1)),
            must_refuse=True)
    check_blob(c, "int of 5000 digits", with_meta(vae, lambda m: json.dumps(m).replace(
        '"epochs": ', '"epochs": ' + "9" * 5000 + ', "x": ', 1)), must_refuse=True)
    check_blob(c, "100k metrics", with_meta(vae, lambda m: m["metrics"].update(
        {f"m{i}": 1.0 for i in range(100_000)})), must_refuse=True)
    check_blob(c, "1M-entry history", with_meta(vae, lambda m: m["history"].update(
        train=[{}] * 1_000_001)), must_refuse=True)
    header, data = split(vae)
    many = dict(header)
    for i in range(200_000):
        many[f"t{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    check_blob(c, "200k tensors", join(many, data), must_refuse=True)
    huge = {"hidden 4096 latent 512": {"hidden": 4096, "latent_dim": 512},
            "image 3x4096x4096": {"image_shape": [3, 4096, 4096]},
            "image 1x100000x1": {"image_shape": [1, 100000, 1]},
            "1e9 classes": {"n_classes": 10 ** 9}, "hidden 10^9": {"hidden": 10 ** 9},
            "latent 10^6": {"latent_dim": 10 ** 6}}
    for name, cfg in huge.items():
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        check_blob(c, name, with_meta(vae, lambda m: m["config"].update(cfg)), must_refuse=True)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        if grew > 200:
            record(c, name + " memory", False, f"{grew:.0f} MB")
    for name, cfg in {"tree hidden 4096": {"hidden": 4096}, "tree depth 12": {"max_depth": 12},
                      "tree channels 1024": {"conv_channels": [1024, 1024, 1024]},
                      "tree node latent 256": {"node_latent_dim": 256}}.items():
        check_blob(c, name, with_meta(tree, lambda m: m["config"].update(cfg)),
                   must_refuse="channels" not in name)  # unused by the 8x8 MLP tree: valid
    for n_nodes in (63, 255, 2047, 100_000):
        nodes = [{"id": i, "parent": None if i == 0 else (i - 1) // 2,
                  "depth": int(np.log2(i + 1)),
                  "children": [2 * i + 1, 2 * i + 2] if 2 * i + 2 < n_nodes else []}
                 for i in range(n_nodes)]
        check_blob(c, f"tree of {n_nodes} nodes", with_meta(tree, lambda m: m["extra"][
            "tree"].update(nodes=nodes, next_id=n_nodes)), must_refuse=True)
    for claim in (2 ** 62, 2 ** 24 + 1, 10 ** 9):
        check_blob(c, f"header claims {claim}", struct.pack("<Q", claim) + b"{}" * 8,
                   must_refuse=True)
    check_blob(c, "600 MB upload", b"\0" * (checkpoints.MAX_FILE_BYTES + 1), must_refuse=True)


def class3(vae, tmp: Path):
    c = "3 files"
    folder = tmp / "files"
    folder.mkdir()
    (folder / "good.safetensors").write_bytes(vae)
    cases = {}
    for name in ("fifo", "fifo.partial"):
        p = folder / f"{name}.safetensors"
        os.mkfifo(p)
        cases[name] = p
    for name in ("dir", "dir.partial"):
        p = folder / f"{name}.safetensors"
        p.mkdir()
        cases[name] = p
    links = {"loop": "loop.safetensors", "dangling": "nowhere", "zero": "/dev/zero",
             "null": "/dev/null", "random": "/dev/urandom", "tty": "/dev/tty",
             "to_dir": str(folder / "dir.safetensors"), "to_fifo": str(folder / "fifo.safetensors")}
    for name, target in links.items():
        p = folder / f"{name}.safetensors"
        os.symlink(target, p)
        cases[name] = p
    loop_a, loop_b = folder / "a.safetensors", folder / "b.safetensors"
    os.symlink(loop_b.name, loop_a)
    os.symlink(loop_a.name, loop_b)
    cases["loop a<->b"] = loop_a
    sock = folder / "sock.safetensors"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    cases["socket"] = sock
    unreadable = folder / "unreadable.safetensors"
    unreadable.write_bytes(b"x" * 100)
    unreadable.chmod(0)
    cases["unreadable"] = unreadable
    sub = folder / "sub"
    sub.mkdir()
    os.symlink("..", sub / "up")  # a directory loop for rglob
    cases["empty"] = folder / "empty.safetensors"
    cases["empty"].write_bytes(b"")
    for name, p in cases.items():
        for how, fn in (("read_meta", lambda: checkpoints.read_meta(p)), ("load", lambda: load(p))):
            out, secs, hung = run(fn)
            ok, detail = handled(out, secs, hung, ok_values=False)
            record(c, f"{name} {how}", ok, detail)
    out, secs, hung = run(lambda: list_checkpoints(folder, partial=True))
    ok = not hung and not isinstance(out, BaseException)
    if ok:
        by = {x.path.name: x for x in out}
        ok = by["good.safetensors"].error is None and all(
            by[p.name].error for k, p in cases.items() if k != "unreadable" or os.geteuid())
    record(c, "list_checkpoints names every bad entry, keeps the good", ok,
           "hung" if hung else str(out)[:100] if isinstance(out, BaseException) else "")
    os.environ["LATENTVIZ_RUNS"] = str(folder)
    from latentviz.ui import state
    out, secs, hung = run(lambda: (state.checkpoint_files(), state.interrupted_runs()))
    ok = not hung and not isinstance(out, BaseException)
    record(c, "app listings (checkpoint_files, interrupted_runs)", ok and len(out[0]) >= 10
           and len(out[1]) == 2, "" if ok else str(out)[:100])
    from latentviz.ui.training import describe_interrupted
    for p in out[1] if ok else []:
        o, secs, hung = run(lambda: describe_interrupted(p))
        record(c, f"Train page line for {p.name}", *handled(o, secs, hung, ok_values=False))
    s.close()


def class4(vae, tree):
    c = "4 contradictions"
    cases = {
        "dataset mnist for digits model": lambda m: put(m, ("dataset",), "mnist"),
        "dataset fashion_mnist": lambda m: put(m, ("dataset",), "fashion_mnist"),
        "unknown dataset": lambda m: put(m, ("dataset",), "imagenet"),
        "dataset a path without source": lambda m: put(m, ("dataset",), "/tmp/x.npz"),
        "variant branched": lambda m: put(m, ("variant",), "branched"),
        "variant kmeans": lambda m: put(m, ("variant",), "kmeans"),
        "variant treevae": lambda m: put(m, ("variant",), "treevae"),
        "variant cvae": lambda m: put(m, ("variant",), "cvae"),
        "n_classes 3": lambda m: m["config"].update(n_classes=3),
        "epochs vs history": lambda m: put(m, ("epochs",), 5),
        "history lengths": lambda m: m["history"]["test"].append({}),
        "seed vs train_config": lambda m: put(m, ("seed",), 3),
        "weights_dtype float16": lambda m: put(m, ("weights_dtype",), "float16"),
        "optimizer ids short": lambda m: put(m, ("optimizer", "param_groups", 0, "params"), [0, 1]),
        "optimizer ids repeated": lambda m: m["optimizer"]["param_groups"][0]["params"].__setitem__(1, 0),
        "optimizer scalars unknown pid": lambda m: m["optimizer"]["scalars"].update({"999": {}}),
        "optimizer dropped, tensors kept": lambda m: put(m, ("optimizer",), None),
        "dataset_source for digits": lambda m: put(m, ("dataset_source",), {
            "path": "/x", "image_shape": [1, 8, 8], "images_per_class": {"train": [1] * 10,
                                                                        "test": [1] * 10}}),
    }
    for name, edit in cases.items():
        check_blob(c, name, with_meta(vae, edit), must_refuse=True)
    header, data = split(vae)
    first = next(k for k in header if k != "__metadata__")
    header2 = json.loads(json.dumps(header))
    header2[first]["dtype"] = "I64"
    check_blob(c, "float tensor stored as I64", join(header2, data), must_refuse=True)
    tcases = {"tree max_depth below its nodes": lambda m: m["config"].update(max_depth=1),
              "tree node_latent_dim": lambda m: m["config"].update(node_latent_dim=5),
              "tree without topology": lambda m: put(m, ("extra",), {}),
              "tree with a leaf fewer": lambda m: m["extra"]["tree"]["nodes"].pop()}
    for name, edit in tcases.items():
        check_blob(c, name, with_meta(tree, edit), must_refuse=True)


def class5(vae, good, tmp: Path):
    c = "5 uploads"
    folder = tmp / "uploads"
    for name in ("x.partial.safetensors", "x.PARTIAL.safetensors", "x.partial", "../x.partial.safetensors",
                 ".partial.safetensors", "a.partial.partial.safetensors", "x.partial..safetensors"):
        out, secs, hung = run(lambda: store_upload(good, name, folder))
        ok = not isinstance(out, BaseException) and not hung and not out.name.lower().endswith(
            ".partial.safetensors") and out.parent == folder
        record(c, f"name {name!r}", ok, str(out))
    model, _ = load(good)
    header, _ = split(good)
    import safetensors.torch as sft
    for label, value in (("weights 3e38", 3e38), ("weights 1e30", 1e30)):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        blob = sft.save({k: v.contiguous() for k, v in model.state_dict().items()},
                        metadata=header["__metadata__"])
        out, secs, hung = run(lambda: store_upload(blob, "bad.safetensors", folder))
        record(c, label, *handled(out, secs, hung, ok_values=False))
    many = tmp / "many"
    errs = []

    def up():
        for _ in range(5):
            try:
                store_upload(good, "same.safetensors", many)
            except Exception as exc:  # noqa: BLE001
                errs.append(exc)
    threads = [threading.Thread(target=up) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    n = len(list(many.glob("*.safetensors")))
    record(c, "8 x 5 concurrent uploads of one name", n == 40 and not errs, f"{n} files")
    partial_as_upload = vae
    out, secs, hung = run(lambda: store_upload(partial_as_upload, "p.safetensors", folder))
    record(c, "an interrupted run uploaded", not isinstance(out, BaseException) or isinstance(
        out, CheckpointError), str(out)[:80])

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload))

    def png(a):
        from PIL import Image
        b = io.BytesIO()
        Image.fromarray(a).save(b, format="PNG")
        return b.getvalue()
    g = png(np.full((28, 28), 9, np.uint8))
    ihdr = lambda w, h: PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))  # noqa: E731
    images = {
        "bomb 60000^2 header only": ihdr(60000, 60000),
        "bomb 60000^2 with data": ihdr(60000, 60000) + chunk(b"IDAT", zlib.compress(b"\0" * 10 ** 6))
        + chunk(b"IEND", b""),
        "bomb 4000^2": ihdr(4000, 4000) + chunk(b"IDAT", zlib.compress(b"\0" * 10 ** 5))
        + chunk(b"IEND", b""),
        "zTXt bomb": g[:33] + chunk(b"zTXt", b"c\0\0" + zlib.compress(b"\0" * 50_000_000, 9)) + g[33:],
        "iTXt bomb": g[:33] + chunk(b"iTXt", b"c\0\1\0\0\0" + zlib.compress(b"\0" * 50_000_000, 9)) + g[33:],
        "many tEXt": g[:33] + b"".join(chunk(b"tEXt", b"k\0" + b"v" * 100) for _ in range(5000)) + g[33:],
        "1 x 2048": png(np.zeros((1, 2048), np.uint8)),
        "2048 x 1": png(np.zeros((2048, 1), np.uint8)),
        "3 x 600": png(np.zeros((3, 600), np.uint8)),
        "truncated png": png(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:400],
        "truncated jpeg": (lambda: (lambda b: b[:200])(_jpeg()))(),
        "16-bit": png(np.zeros((8, 8), np.uint16)),
        "gif": b"GIF89a" + b"\0" * 50, "empty": b"", "text": b"hello",
        "3 MB": b"\x89PNG" + b"0" * 3 * 2 ** 20,
        "0 x 0 IHDR": ihdr(0, 0) + chunk(b"IEND", b""),
    }
    for name, data in images.items():
        out, secs, hung = run(lambda: read_upload(data, name))
        record(c, f"image {name}", *handled(out, secs, hung, allowed=(UploadError,),
                                             ok_values=name in ()))


def _jpeg():
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8)).save(b, "JPEG")
    return b.getvalue()


def class6(tmp: Path):
    from latentviz.__main__ import main
    c = "6 CLI"
    cwd = os.getcwd()
    work = tmp / "cli"
    work.mkdir()
    os.chdir(work)
    Path("notes.safetensors").write_text("notes")
    Path("adir.safetensors").mkdir()
    Path("afile").write_text("x")
    Path("ro").mkdir()
    os.mkfifo("fifo.safetensors")
    tr = ["train", "--variant", "vae", "--epochs", "1", "--no-classifiers"]
    cases = [tr + ["--out", "adir.safetensors"], tr + ["--out", "afile/x.safetensors"],
             tr + ["--out", "afile/deeper/x.safetensors"], tr + ["--out", "notes.safetensors"],
             tr + ["--out", "fifo.safetensors"], tr + ["--out", "x.txt"],
             tr + ["--seed", str(2 ** 40)], tr + ["--seed", "-1"], tr + ["--epochs", "0"],
             tr + ["--device", "tpu"], tr + ["--lr", "nan"], tr + ["--lr", "inf"],
             ["eval", "adir.safetensors"], ["eval", "fifo.safetensors"],
             ["eval", "notes.safetensors", "--device", "cuda:7"],
             ["eval", "missing.safetensors"], ["resume", "notes.safetensors"],
             ["resume", "missing.safetensors", "--epochs", "-1"],
             ["train", "--variant", "kmeans", "--n-clusters", "500", "--n-train", "100",
              "--epochs", "1", "--no-classifiers", "--out", "k.safetensors"],
             ["train", "--variant", "nope"], ["list", "adir.safetensors"], ["bogus"],
             ["train", "--variant", "vae", "--n-train", "1"]]
    if os.geteuid() != 0:
        os.chmod("ro", 0o500)
        cases.append(tr + ["--out", "ro/x.safetensors"])
    for args in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(args)
            except SystemExit as exc:
                rc = exc.code
            except BaseException as exc:  # noqa: BLE001
                rc = f"raised {type(exc).__name__}"
        lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error:")]
        ok = (rc == 2 and len(lines) == 1 and "Traceback" not in err.getvalue()) or (
            args[0] == "list" and rc == 0)
        record(c, " ".join(args[-3:]), ok, f"rc={rc} {lines[:1]}")
    ok = Path("notes.safetensors").read_bytes() == b"notes"
    record(c, "a non-checkpoint --out is intact", ok)
    os.chdir(cwd)


def class7(digits):
    from conftest import TINY_TRAIN, tiny_model
    c = "7 divergence"
    cases = [("lambda_hot", {"beta": 1e35, "lam": 100.0}, "beta * kl overflowed"),
             ("lambda_hot", {"beta": 1e37, "lam": 20.0}, "beta * kl overflowed"),
             ("branched", {"lam": 3e38}, "lam * cls"),
             ("branched", {"alpha": 1e37}, "alpha * recon"),
             ("fixed_output", {"beta": 3e38}, "beta"),
             ("beta_vae", {"beta": 1e6}, "beta")]
    for variant, cfg, says in cases:
        model = tiny_model(variant, digits, **cfg)
        tc = TINY_TRAIN.replace(epochs=2, lr=1.0 if cfg.get("beta") == 1e6 else 1e-3)
        out, secs, hung = run(lambda: lv.fit(model, digits, tc), timeout=120)
        text = str(out)
        ok = isinstance(out, lv.train.TrainingDiverged) and says in text
        if not isinstance(out, BaseException):
            ok, text = True, "trained without diverging (nothing to name)"
        record(c, f"{variant} {cfg}", ok, text[:140])


def class8(vae, tmp: Path):
    from latentviz.runs import resume
    c = "8 resume"
    import safetensors.torch as sft

    def saved(blob, name="r.partial.safetensors"):
        p = tmp / name
        p.write_bytes(blob)
        return p
    model, _ = load(vae)
    no_optim = with_meta(vae, lambda m: put(m, ("optimizer",), None))
    no_optim = sft.save({k: v.contiguous() for k, v in model.state_dict().items()},
                        metadata=split(no_optim)[0]["__metadata__"])
    cases = {
        "train_config null": (with_meta(vae, lambda m: put(m, ("train_config",), None)), None),
        "train_config string": (with_meta(vae, lambda m: put(m, ("train_config",), "x")), None),
        "train_config lr string": (with_meta(vae, lambda m: put(m, ("train_config", "lr"), "x")), None),
        "train_config epochs 0": (with_meta(vae, lambda m: put(m, ("train_config", "epochs"), 0)), None),
        "history null": (with_meta(vae, lambda m: (put(m, ("history",), None))), None),
        "history list": (with_meta(vae, lambda m: put(m, ("history",), [])), None),
        "history train null": (with_meta(vae, lambda m: put(m, ("history", "train"), None)), None),
        "optimizer missing": (no_optim, None),
        "optimizer scalars mistyped": (with_meta(vae, lambda m: put(m, ("optimizer", "scalars"),
                                                                    {"0": {"step": "x"}})), None),
        "optimizer lr huge": (with_meta(vae, lambda m: put(m, ("optimizer", "param_groups", 0,
                                                               "lr"), 1e30)), None),
        "optimizer betas short": (with_meta(vae, lambda m: put(m, ("optimizer", "param_groups", 0,
                                                                   "betas"), [0.9])), None),
        "made seconds string": (with_meta(vae, lambda m: put(m, ("made", "seconds"), "x")), None),
        "epochs -1": (vae, -1), "epochs 0": (vae, 0), "epochs 1.5": (vae, 1.5),
        "epochs True": (vae, True), "epochs '2'": (vae, "2"), "epochs 10^9": (vae, 10 ** 9),
    }
    for name, (blob, extra) in cases.items():
        out, secs, hung = run(lambda: resume(saved(blob), extra, classifiers=()), timeout=120)
        record(c, name, *handled(out, secs, hung, allowed=(CheckpointError, ConfigError),
                                 ok_values=False))


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        digits, vae, tree = base_files(tmp)
        good = lv.save(tmp / "g.safetensors", load(vae)[0], dataset="digits").read_bytes()
        t0 = time.perf_counter()
        class1(vae, tree)
        class2(vae, tree)
        class3(vae, tmp)
        class4(vae, tree)
        class5(vae, good, tmp)
        class6(tmp)
        class7(digits)
        class8(vae, tmp)
        took = time.perf_counter() - t0
    total = handled_n = 0
    for cls, rows in sorted(RESULTS.items()):
        ok = sum(r[1] for r in rows)
        total, handled_n = total + len(rows), handled_n + ok
        print(f"class {cls:<18} tried {len(rows):>5}  handled {ok:>5}")
        for name, good_, detail in rows:
            if not good_:
                print(f"    NOT HANDLED {name}: {detail}")
    print(f"all: tried {total}, handled {handled_n} ({took:.0f} s)")
    return 0 if total == handled_n else 1


if __name__ == "__main__":
    sys.exit(main())
