"""Interrupted and diverging runs never damage a good checkpoint; a killed run resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import latentviz as lv
from latentviz.checkpoints import read_meta
from latentviz.runs import RunSpec, partial_path, resume, run_training
from latentviz.train import TrainingDiverged

from conftest import TINY, TINY_TRAIN

ROOT = Path(__file__).resolve().parents[1]


def test_a_diverging_run_saves_nothing_over_a_good_checkpoint(tmp_path):
    out = tmp_path / "model.safetensors"
    run_training(RunSpec("vae", "digits", dict(TINY), TINY_TRAIN.replace(epochs=2), out),
                 classifiers=())
    good = out.read_bytes()
    with pytest.raises(TrainingDiverged, match="epoch 1: loss term"):
        run_training(RunSpec("vae", "digits", dict(TINY), TINY_TRAIN.replace(epochs=3, lr=10.0),
                             out), classifiers=())
    assert out.read_bytes() == good
    assert not partial_path(out).exists(), "no epoch of the diverged run was kept"


def test_a_training_process_killed_mid_run_keeps_the_old_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "model.safetensors"
    run_training(RunSpec("vae", "digits", dict(TINY), TINY_TRAIN.replace(epochs=1), out),
                 classifiers=())
    before = out.read_bytes()
    cmd = [sys.executable, "-m", "latentviz", "train", "--variant", "vae", "--dataset", "digits",
           "--hidden", str(TINY["hidden"]), "--latent-dim", str(TINY["latent_dim"]),
           "--epochs", "400", "--batch-size", "64", "--no-classifiers", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    partial = partial_path(out)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if partial.exists() and read_meta(partial).epochs >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run never saved a second epoch")
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: as a crash or OOM kill
        proc.wait(30)
    assert out.read_bytes() == before, "the finished checkpoint was touched by the killed run"
    done_epochs = read_meta(partial).epochs
    assert done_epochs >= 2
    cut = read_meta(partial).meta["made"]
    result = resume(partial, extra_epochs=1, classifiers=())
    assert result.path == out and result.history.epochs == done_epochs + 1
    made = read_meta(out).meta["made"]
    assert made["command"] == cut["command"], "the command that remakes it is the first one"
    assert made["resumed_after_epochs"] == [done_epochs]
    assert made["seconds"] == pytest.approx(result.seconds) and result.seconds > cut["seconds"]
    assert lv.load(out)[1].epochs == done_epochs + 1


@pytest.fixture
def one_thread():
    """Tiny models: on a busy 2-core machine a second torch thread only adds hand-offs
    (this test took 464 s instead of 3 s beside another training process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_treevae_run_interrupted_mid_growth_resumes_to_the_uninterrupted_tree(tmp_path,
                                                                                one_thread):
    """TreeVAE resumes inside a stage: every finished epoch leaves a partial checkpoint
    holding the tree, where the schedule stands (a subtree stage's images among it) and the
    stage's Adam; resuming it on the CPU ends with the same tree, weights and history as a
    run that was never stopped."""
    import torch

    from latentviz.models.tree_vae import TreeVAEConfig

    # initial, split, retrain, ..., final; two epochs per subtree, to stop after the first
    model = {**TreeVAEConfig.TINY, "retrain_every": 1, "epochs_subtree": 2}
    whole = run_training(RunSpec("treevae", "digits", model, TINY_TRAIN, tmp_path / "a.safetensors"),
                         classifiers=())
    stages = list(dict.fromkeys(whole.history.stages))
    assert "retrain" in stages and len(stages) >= 4, stages
    stop_at = stages[3]

    assert stop_at.startswith("split"), stages

    def crash(p):
        if p.stage == stop_at and p.phase == "epoch":
            raise KeyboardInterrupt  # as Ctrl-C in the CLI: no cleanup of the partial file
    out = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec("treevae", "digits", model, TINY_TRAIN, out), crash, classifiers=())
    partial = partial_path(out)
    saved = read_meta(partial).meta
    position = saved["extra"]["schedule"]
    assert not out.exists() and position["stages"] == 4 and position["next"] == "grow"
    assert position["stage"]["epoch"] == 1 and position["stage"]["train_mask"]["n"] > 0
    assert saved["optimizer"], "the stage's Adam is saved with it"
    assert list(dict.fromkeys(saved["history"]["stages"])) == stages[:4]

    blob = partial.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = json.loads(header["__metadata__"]["latentviz"])
    meta["extra"]["schedule"]["next"] = "__import__('os').system('true')"
    header["__metadata__"]["latentviz"] = json.dumps(meta)
    head = json.dumps(header).encode()
    forged = tmp_path / "forged.partial.safetensors"
    forged.write_bytes(len(head).to_bytes(8, "little") + head + blob[8 + n:])
    with pytest.raises(lv.checkpoints.CheckpointError, match="extra.schedule.next"):
        resume(forged, classifiers=())

    again = resume(partial, classifiers=())
    assert again.path == out and not partial.exists()
    assert again.model.tree.to_state() == whole.model.tree.to_state()
    assert again.history.stages == whole.history.stages
    a, b = whole.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    final = read_meta(out).meta
    assert "schedule" not in final["extra"], "a finished tree carries no schedule position"
    with pytest.raises(lv.checkpoints.CheckpointError, match="nothing to resume"):
        resume(out, classifiers=())


def test_a_grown_tree_grows_on_to_more_leaves_as_a_run_started_with_them(tmp_path, one_thread):
    """The paper grows 20-leaf trees for DP and LP and 10-leaf ones for ACC and NMI. A run
    keeps its checkpoint of the moment growth ended (before pruning); resumed with a larger
    max_leaves it ends with the tree, weights and history of a run started with it, the
    retrain the smaller run skipped for having its leaves included."""
    import torch

    from latentviz.models.tree_vae import TreeVAEConfig
    from latentviz.runs import grown_path

    small = {**TreeVAEConfig.TINY, "retrain_every": 1, "max_leaves": 3}
    large = {**small, "max_leaves": 4}
    native = run_training(RunSpec("treevae", "digits", large, TINY_TRAIN,
                                  tmp_path / "native.safetensors"), classifiers=())
    out = tmp_path / "small.safetensors"
    done_small = run_training(RunSpec("treevae", "digits", small, TINY_TRAIN, out), classifiers=())
    grown = grown_path(out)
    assert grown.exists() and out.exists() and not partial_path(out).exists()
    assert done_small.model.n_leaves <= 3
    position = read_meta(grown).meta["extra"]["schedule"]
    # this small run had its 3 leaves after split 1 and skipped that split's retrain
    assert "retrain" not in done_small.history.stages and "retrain" in native.history.stages
    assert position["next"] == "retrain"

    with pytest.raises(lv.ConfigError, match="out"):
        resume(grown, classifiers=(), max_leaves=4)
    with pytest.raises(lv.ConfigError, match="finished growing|nothing to resume"):
        resume(out, classifiers=(), max_leaves=4, out=tmp_path / "x.safetensors")
    with pytest.raises(lv.ConfigError, match=">= 3"):
        resume(grown, classifiers=(), max_leaves=2, out=tmp_path / "x.safetensors")

    before = grown.read_bytes()
    forked = resume(grown, classifiers=(), max_leaves=4, out=tmp_path / "forked.safetensors")
    assert grown.read_bytes() == before, "the grown checkpoint stays for other forks"
    assert forked.path == tmp_path / "forked.safetensors"
    assert forked.model.config.max_leaves == 4
    assert forked.history.stages == native.history.stages
    assert forked.model.tree.to_state() == native.model.tree.to_state()
    a, b = native.model.state_dict(), forked.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_meta(forked.path).meta["config"]["max_leaves"] == 4
