"""Data-parallel training under torchrun: 2 gloo processes on the CPU train the model one
process trains, rank 0 alone writes, and a distributed run resumes.

Tolerance: with the same global batch, N processes see the images one process sees in
every step, and DDP averages their gradients; what differs is the reparameterisation
noise (each rank draws its own) and float rounding. The test loss of every epoch must
match the single-process run within 1.5% (relative). Measured on this setting (kmeans,
digits, 3 epochs, batch 64): the 2-process run is within 0.3% of the single-process run,
eight noise seeds of the single process spread up to 0.6%, and the mistakes this guards
against move it by 8% or more (twice or half the learning rate, half or twice the batch).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import latentviz as lv
from latentviz import distributed
from latentviz.checkpoints import read_meta
from latentviz.models import ConfigError
from latentviz.runs import RunSpec, partial_path, run_training

from conftest import TINY, TINY_TRAIN, tiny_model

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.015
TRAIN = TINY_TRAIN.replace(epochs=3)
FLAGS = ["--variant", "kmeans", "--dataset", "digits", "--hidden", str(TINY["hidden"]),
         "--latent-dim", str(TINY["latent_dim"]), "--epochs", str(TRAIN.epochs),
         "--batch-size", str(TRAIN.batch_size), "--seed", str(TRAIN.seed)]

# Rank 0 stops dead after epoch `stop` (its partial checkpoint written): a crash, to resume.
CRASH = textwrap.dedent("""
    import sys
    from pathlib import Path
    import latentviz as lv
    from latentviz.runs import RunSpec, run_training

    out, stop = Path(sys.argv[1]), int(sys.argv[2])

    def crash(p):
        if p.phase == "epoch" and p.epoch == stop:
            raise SystemExit(3)
    run_training(RunSpec("kmeans", "digits", {"latent_dim": %d, "hidden": %d},
                         lv.TrainConfig(epochs=%d, batch_size=%d, seed=%d), out),
                 crash, classifiers=())
""" % (TINY["latent_dim"], TINY["hidden"], TRAIN.epochs, TRAIN.batch_size, TRAIN.seed))


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", str(nproc), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """`torchrun --nproc-per-node 2 -m latentviz train ...`: (checkpoint path, process)."""
    folder = tmp_path_factory.mktemp("ddp")
    out = folder / "two.safetensors"
    proc = torchrun("-m", "latentviz", "train", *FLAGS, "--classifiers", "logreg",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, proc


def test_each_rank_takes_an_equal_disjoint_share_of_every_global_batch(monkeypatch):
    perm, bs, steps, world = torch.randperm(103), 8, 12, 4
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    shares = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.my_share(perm, bs, steps).view(steps, bs // world))
    for s in range(steps):
        got = torch.cat([share[s] for share in shares])
        assert sorted(got.tolist()) == sorted(perm[s * bs:(s + 1) * bs].tolist()), s
    with pytest.raises(ConfigError, match="batch_size = 10.*multiple of the 4 processes"):
        distributed.check_batch(10)


def test_two_gloo_processes_train_what_one_process_trains(ddp_run, digits, tmp_path):
    out, proc = ddp_run
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], \
        "one checkpoint, no partial or temporary file left"
    assert proc.stdout.count("saved ") == 1 and proc.stderr.count("epoch 3/3") == 1, \
        "rank 0 alone prints"
    meta = read_meta(out).meta
    assert meta["made"]["world_size"] == 2 and meta["epochs"] == TRAIN.epochs
    assert {"test_recon", "acc_logreg"} <= set(meta["metrics"]), meta["metrics"]

    single = run_training(RunSpec("kmeans", "digits", dict(TINY), TRAIN,
                                  tmp_path / "one.safetensors"), classifiers=("logreg",))
    assert read_meta(single.path).meta["made"]["world_size"] == 1
    for epoch, (a, b) in enumerate(zip(meta["history"]["test"], single.history.test), 1):
        gap = abs(a["total"] / b["total"] - 1)
        assert gap < TOLERANCE, f"epoch {epoch}: test loss {a['total']:.3f} (2 processes) " \
                                f"vs {b['total']:.3f} (1 process), {gap:.2%} apart"
    gap = abs(meta["metrics"]["test_recon"] / single.metrics["test_recon"] - 1)
    assert gap < TOLERANCE, f"final test recon {gap:.2%} apart"
    model, _ = lv.load(out)
    assert model.centres.abs().sum() > 0, "the k-means centres were fitted and saved"


def test_a_crashed_distributed_run_resumes_under_torchrun_to_the_uninterrupted_run(ddp_run,
                                                                                   tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    out = tmp_path / "crashed.safetensors"
    crashed = torchrun(str(script), str(out), "2")
    assert crashed.returncode != 0
    partial = partial_path(out)
    assert not out.exists() and read_meta(partial).epochs == 2
    assert read_meta(partial).meta["made"]["world_size"] == 2

    proc = torchrun("-m", "latentviz", "resume", str(partial), "--no-classifiers")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert not partial.exists() and proc.stdout.count("saved ") == 1
    meta = read_meta(out).meta
    assert meta["epochs"] == 3 and meta["made"]["resumed_after_epochs"] == [2]
    assert meta["made"]["world_size"] == 2
    resumed, _ = lv.load(out)
    whole, _ = lv.load(ddp_run[0])
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed = uninterrupted, bit for bit"


def test_a_finished_rank_waits_for_the_others_before_leaving_and_a_failed_one_does_not(
        monkeypatch):
    """Rank 0 evaluates and writes after the others are done; a rank that left at once
    could die in gloo's teardown and turn a saved run into a failed one (2 in 12 runs)."""
    calls = []
    d = torch.distributed
    monkeypatch.setattr(d, "is_initialized", lambda: True)
    monkeypatch.setattr(d, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(d, "monitored_barrier",
                        lambda timeout=None: calls.append(("barrier", timeout)))
    monkeypatch.setattr(d, "destroy_process_group", lambda *a: calls.append(("destroy", None)))
    distributed.leave(finished=True)
    assert calls == [("barrier", distributed.LEAVE_TIMEOUT), ("destroy", None)]
    calls.clear()
    distributed.leave(finished=False)
    assert calls == [("destroy", None)], "after a failure the others may never come"


def test_treevae_is_refused_under_torchrun(digits, monkeypatch):
    model = tiny_model("treevae", digits)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="growth is sequential.*without torchrun"):
        lv.train_model(model, digits, TINY_TRAIN)
