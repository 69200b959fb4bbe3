"""Checkpoints: safetensors + JSON, atomic, rebuilt from the registry, clear errors."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import latentviz as lv
from latentviz.checkpoints import CheckpointError, list_checkpoints, read_meta


def test_metadata_records_how_the_run_was_made(tiny_checkpoints):
    meta = read_meta(tiny_checkpoints["lambda_hot"]).meta
    for key in ("format_version", "variant", "config", "dataset", "seed", "epochs", "history",
                "metrics", "library_version"):
        assert key in meta, key
    assert meta["config"]["lam"] == 5.0 and meta["epochs"] == len(meta["history"]["train"])
    assert "test_recon" in meta["metrics"]


def test_list_shows_every_checkpoint_and_flags_bad_ones(tiny_checkpoints, tmp_path):
    folder = tiny_checkpoints["vae"].parent
    (folder / "zz-broken.safetensors").write_bytes(b"not a checkpoint")
    found = {c.path.name: c for c in list_checkpoints(folder)}
    assert {p.name for p in tiny_checkpoints.values()} <= set(found)
    assert found["zz-broken.safetensors"].error
    (folder / "zz-broken.safetensors").unlink()


def test_a_corrupt_file_raises_a_clear_error(tiny_checkpoints, tmp_path):
    blob = tiny_checkpoints["vae"].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        lv.load(bad)


def test_weights_that_do_not_match_the_config_are_refused(tiny_checkpoints, tmp_path):
    blob = tiny_checkpoints["vae"].read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    meta = json.loads(header["__metadata__"]["latentviz"])
    meta["config"]["latent_dim"] = 7  # the JSON now lies about the shapes
    header["__metadata__"]["latentviz"] = json.dumps(meta)
    new = json.dumps(header).encode()
    path = tmp_path / "lies.safetensors"
    path.write_bytes(struct.pack("<Q", len(new)) + new + blob[8 + n:])
    with pytest.raises(CheckpointError, match="do not match a vae model.*shape"):
        lv.load(path)


def test_saving_is_atomic_and_keeps_the_old_file_on_failure(tiny_checkpoints, monkeypatch):
    path = tiny_checkpoints["vae"]
    before = path.read_bytes()
    model, _ = lv.load(path)
    import latentviz.checkpoints as ck

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ck.os, "replace", boom)
    with pytest.raises(OSError):
        lv.save(path, model, dataset="digits")
    assert path.read_bytes() == before
    assert not list(path.parent.glob(f".{path.name}.*.tmp")), "temporary file left behind"


def test_a_checkpoint_replaced_while_it_is_read_is_read_whole(tiny_checkpoints, tmp_path,
                                                               monkeypatch):
    """A running save replaces the file the app is reading: the reader sees one file, never
    one file's size with the other's header (the race CI once hit in test_interrupted)."""
    import builtins

    import latentviz.checkpoints as ck

    path = tmp_path / "live.safetensors"
    model, _ = lv.load(tiny_checkpoints["vae"])
    lv.save(path, model, dataset="digits", metrics={"short": 1.0})
    newer = tmp_path / "newer.safetensors"
    lv.save(newer, model, dataset="digits", metrics={f"a_much_longer_metric_{i}": float(i)
                                                     for i in range(40)})
    swaps = []

    def swap_once():
        if not swaps:
            swaps.append(1)
            newer.replace(path)  # what checkpoints.atomic_write does, mid-read

    real_open = builtins.open

    def open_after_swap(file, *a, **k):
        if str(file) == str(path):
            swap_once()
        return real_open(file, *a, **k)
    monkeypatch.setattr(ck, "open", open_after_swap, raising=False)
    assert len(read_meta(path).meta["metrics"]) == 40

    # load reads the header and the weights through one open file: the same swap at its
    # open gives the newer file whole, never the older header with the newer weights.
    lv.save(path, model, dataset="digits", metrics={"short": 1.0})
    lv.save(newer, model, dataset="digits", metrics={f"m{i}": float(i) for i in range(40)})
    swaps.clear()
    assert len(lv.load(path)[1].meta["metrics"]) == 40


def test_half_precision_weights_load_as_float32(tiny_checkpoints, tmp_path, digits):
    model, _ = lv.load(tiny_checkpoints["vae"])
    half, ck = lv.load(lv.save(tmp_path / "h.safetensors", model, dataset="digits", half=True))
    assert ck.meta["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert torch.allclose(model.embed(digits.x_test), half.embed(digits.x_test), atol=1e-2)


def test_a_finished_run_ships_with_its_half_precision_check(tiny_checkpoints, tmp_path):
    from latentviz import zoo

    run = tiny_checkpoints["treevae"]
    out = zoo.ship_run(run, tmp_path / "digits-treevae.safetensors")
    model, ck = lv.load(out)
    check = ck.meta["made"]["half_check"]
    assert check["stored_half"] == (check["abs_diff"] <= zoo.HALF_TOLERANCE
                                    and check["scores_abs_diff"] <= zoo.SCORE_TOLERANCE
                                    and check["counts_kept"])
    assert ck.meta["weights_dtype"] == ("float16" if check["stored_half"] else "float32")
    assert ck.meta["extra"]["tree"] == lv.checkpoints.read_meta(run).meta["extra"]["tree"]
    assert ck.metrics["dp"] == lv.checkpoints.read_meta(run).metrics["dp"]


def test_a_shipped_run_says_the_command_that_reproduces_it_relative_to_the_repository(
        tiny_checkpoints, tmp_path):
    from latentviz import zoo

    run = tiny_checkpoints["treevae"]
    forked = ("python -m latentviz train --variant treevae --dataset digits --max-leaves 20 "
              f"--data-dir {zoo.REPO}/.data --out {zoo.REPO}/runs/t-20leaves.safetensors")
    made = lv.checkpoints.read_meta(zoo.ship_run(run, tmp_path / "t.safetensors",
                                                 command=forked)).meta["made"]
    assert made["command"] == ("python -m latentviz train --variant treevae --dataset digits "
                               "--max-leaves 20 --data-dir .data --out runs/t-20leaves.safetensors")
    kept = {k: v for k, v in made.items() if k not in ("command", "half_check")}
    assert kept == {k: v for k, v in lv.checkpoints.read_meta(run).meta["made"].items()
                    if k != "command"}, "the rest of the run's record is kept"
    assert zoo.relative_command(f"x --data-dir {zoo.REPO} --out /elsewhere/{zoo.REPO.name}/a") == \
        f"x --data-dir . --out /elsewhere/{zoo.REPO.name}/a", "only paths inside the repository"


def test_the_half_precision_check_scores_both_copies_on_the_runs_own_z_sample(
        tiny_checkpoints, tmp_path, digits):
    from latentviz import zoo

    model, ck = lv.load(tiny_checkpoints["treevae"])
    seed = 7   # a run's final metrics draw their z sample with the run's seed
    run = lv.save(tmp_path / "run.safetensors", model, dataset="digits",
                  train_config=lv.TrainConfig(epochs=4, batch_size=64, seed=seed),
                  metrics=lv.metrics.evaluate_model(model, digits, classifiers=(),
                                                    random_state=seed))
    check = lv.load(zoo.ship_run(run, tmp_path / "shipped.safetensors"))[1].meta["made"]["half_check"]

    half, _ = lv.load(lv.save(tmp_path / "half.safetensors", model, dataset="digits", half=True))
    same_noise = lv.metrics.evaluate_model(half, digits, classifiers=(), random_state=seed)
    assert check["test_recon_float16"] == pytest.approx(same_noise["test_recon"], abs=1e-4)
    assert check["abs_diff"] == pytest.approx(
        abs(same_noise["test_recon"] - check["test_recon_float32"]), abs=1e-4)


def test_the_metrics_seed_is_the_runs_and_never_one_sklearn_refuses(tmp_path):
    from latentviz.checkpoints import Checkpoint

    assert Checkpoint(tmp_path / "a.safetensors", {"seed": 42}).metrics_seed == 42
    for odd in (None, 2 ** 40, -1, "7", 1.5):   # absent, or beyond KMeans' random_state
        assert Checkpoint(tmp_path / "a.safetensors", {"seed": odd}).metrics_seed == 0


def test_a_gaussian_likelihood_run_ships_with_its_half_precision_check(tmp_path, digits):
    from conftest import TINY_TRAIN, tiny_model
    from latentviz import zoo
    from latentviz.train import train_model

    model = tiny_model("vae", digits, likelihood="gaussian")
    history = train_model(model, digits, TINY_TRAIN)
    metrics = lv.metrics.evaluate_model(model, digits, classifiers=())
    run = lv.save(tmp_path / "run.safetensors", model, dataset="digits", train_config=TINY_TRAIN,
                  history=history, metrics=metrics)
    check = lv.checkpoints.read_meta(zoo.ship_run(run, tmp_path / "g.safetensors")).meta[
        "made"]["half_check"]
    assert check["test_recon_float32"] == metrics["test_recon_sse"]   # its recon is an SSE
    assert check["abs_diff"] <= zoo.HALF_TOLERANCE


def test_float16_is_refused_where_rounding_moves_a_stored_score(tiny_checkpoints, tmp_path,
                                                                 monkeypatch):
    from latentviz import zoo

    real = zoo.evaluate_model

    def rounding_moves_kmeans(model, data, **kw):   # as k-means on a tree's paths can
        out = real(model, data, **kw)
        return {**out, "kmeans_acc": out["kmeans_acc"] + 0.15}

    monkeypatch.setattr(zoo, "evaluate_model", rounding_moves_kmeans)
    out = zoo.ship_run(tiny_checkpoints["treevae"], tmp_path / "digits-treevae.safetensors")
    ck = lv.checkpoints.read_meta(out)
    check = ck.meta["made"]["half_check"]
    assert check["scores_abs_diff"] == pytest.approx(0.15, abs=zoo.SCORE_TOLERANCE)
    assert not check["stored_half"] and ck.meta["weights_dtype"] == "float32"
    assert ck.metrics["kmeans_acc"] == lv.checkpoints.read_meta(
        tiny_checkpoints["treevae"]).metrics["kmeans_acc"], "the stored figure is the file's"


def test_a_shipped_tree_gains_the_metrics_it_lacks_and_keeps_its_weights_and_figures(
        tiny_checkpoints, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from latentviz import mapcache, zoo

    old = tmp_path / "digits-treevae.safetensors"   # as shipped before n_leaves_mass existed
    with safe_open(str(tiny_checkpoints["treevae"]), "pt") as f:
        header = f.metadata()
    stored = json.loads(header[lv.checkpoints.FORMAT])
    del stored["metrics"]["n_leaves_mass"]
    stored["metrics"]["dp"] = 0.123
    header[lv.checkpoints.FORMAT] = json.dumps(stored)
    save_file(load_file(str(tiny_checkpoints["treevae"])), str(old), metadata=header)
    weights = mapcache.content_hash(old)

    added = zoo.add_tree_metrics(old)

    model, ck = lv.load(old)
    assert set(added) == {"n_leaves_mass"}
    assert ck.metrics["n_leaves_mass"] == lv.tree.leaves_with_mass(
        lv.tree.assign_leaves(model, lv.data.load_dataset("digits").x_test))
    assert ck.metrics["dp"] == 0.123                # a figure it had is not recomputed
    assert mapcache.content_hash(old) == weights    # so its shipped maps still belong to it
    assert zoo.add_tree_metrics(old) == {}
    assert zoo.add_tree_metrics(tiny_checkpoints["vae"]) == {}


SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.glob("digits-*.safetensors")))
def test_a_shipped_file_gives_the_metrics_it_stores(name, digits):
    """What a researcher recomputes from the shipped weights (float16 or not) is what the
    checkpoint, the app and RESULTS.md say: on the run's own seed, as `eval` does."""
    from latentviz import zoo

    model, ck = lv.load(SHIPPED / name)
    again = lv.metrics.evaluate_model(model, digits, classifiers=(),
                                      random_state=ck.metrics_seed)
    assert again["test_recon"] == pytest.approx(ck.metrics["test_recon"], abs=zoo.HALF_TOLERANCE)
    for k in again:
        if k in ck.metrics and not k.startswith("test_"):
            assert again[k] == pytest.approx(ck.metrics[k], abs=zoo.SCORE_TOLERANCE), k
