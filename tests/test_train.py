"""The trainer: reproducible, reports progress, stops on divergence keeping good weights."""
from __future__ import annotations

import pytest
import torch

import latentviz as lv
from latentviz.runs import RunSpec, partial_path, resume, run_training
from latentviz.train import TrainingDiverged

from conftest import TINY, TINY_TRAIN, tiny_model


def test_same_seed_same_cpu_run(digits):
    a, b = tiny_model("vae", digits), tiny_model("vae", digits)
    b.load_state_dict(a.state_dict())
    ha = lv.fit(a, digits, TINY_TRAIN.replace(epochs=2))
    hb = lv.fit(b, digits, TINY_TRAIN.replace(epochs=2))
    assert ha.train == hb.train
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_progress_reports_steps_and_epochs_with_named_terms(digits):
    seen = []
    lv.fit(tiny_model("branched", digits), digits, TINY_TRAIN.replace(epochs=2, log_every=5),
           callback=seen.append)
    epochs = [p for p in seen if p.phase == "epoch"]
    assert [p.epoch for p in epochs] == [1, 2]
    assert set(epochs[0].terms) == {"recon", "kl", "cls"} and "total" in epochs[0].test_terms
    assert any(p.phase == "train" and 0 < p.step < p.steps for p in seen)
    assert seen[-1].fraction == 1.0


def test_test_rows_and_eval_every_choose_what_is_evaluated_and_when(digits):
    model = tiny_model("vae", digits)
    h = lv.fit(model, digits, TINY_TRAIN.replace(epochs=3), eval_every=2,
               x_test=digits.x_test[:50], y_test=digits.y_test[:50])
    assert [bool(t) for t in h.test] == [False, True, True], "epoch 2, and the last"
    expect = lv.train.evaluate(model, digits.x_test[:50], digits.y_test[:50], seed=TINY_TRAIN.seed)
    assert h.test[-1]["recon"] == pytest.approx(expect["recon"], rel=1e-5), "on the rows given"


def test_callback_returning_false_stops_after_the_epoch(digits):
    h = lv.fit(tiny_model("vae", digits), digits, TINY_TRAIN.replace(epochs=5),
               callback=lambda p: False if p.phase == "epoch" else None)
    assert h.epochs == 1 and "stopped" in h.stopped


def test_a_diverging_run_names_epoch_and_term_and_keeps_good_weights(digits):
    model = tiny_model("vae", digits)
    lv.fit(model, digits, TINY_TRAIN.replace(epochs=1))
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged) as err:
        lv.fit(model, digits, TINY_TRAIN.replace(epochs=3, lr=10.0), prepare=False)
    exc = err.value
    assert exc.term in ("recon", "kl") and exc.epoch == 1
    assert "diverged" in exc.history.stopped
    assert f"epoch {exc.epoch}" in str(exc) and exc.term in str(exc)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert all(torch.equal(good[k], v) for k, v in model.state_dict().items()), \
        "the weights from before the diverging epoch are kept"


def test_nan_loss_stops_training_naming_the_term(digits, monkeypatch):
    model = tiny_model("branched", digits)
    real = model.loss

    def poisoned(x, y):
        out = real(x, y)
        out.terms["cls"] = out.terms["cls"] * float("nan")
        out.total = out.total + out.terms["cls"]
        return out
    monkeypatch.setattr(model, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 1: loss term 'cls' became nan.*before epoch 1 were kept"):
        lv.fit(model, digits, TINY_TRAIN.replace(epochs=2))


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    tc = TINY_TRAIN.replace(epochs=3, seed=5)
    full = run_training(RunSpec("kmeans", "digits", dict(TINY), tc, tmp_path / "full.safetensors"),
                        classifiers=())

    def kill(p):
        if p.phase == "epoch" and p.epoch == 2:
            raise KeyboardInterrupt
    out = tmp_path / "killed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec("kmeans", "digits", dict(TINY), tc, out), kill, classifiers=())
    assert partial_path(out).exists() and not out.exists()
    done = resume(partial_path(out), classifiers=())
    assert done.path == out and done.history.epochs == 3
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, done.model.state_dict()[k]), k
    assert done.metrics["test_recon"] == full.metrics["test_recon"]
