"""The command line: train, list, eval, resume; bad input exits 2 with the field named."""
from __future__ import annotations

import io
import json

import pytest

from latentviz.__main__ import main


def test_train_then_list_then_eval(tmp_path, capsys):
    out = tmp_path / "lh.safetensors"
    rc = main(["train", "--variant", "lambda_hot", "--dataset", "digits", "--epochs", "3",
               "--hidden", "64", "--latent-dim", "12", "--no-classifiers", "--out", str(out)])
    assert rc == 0 and out.exists()
    printed = capsys.readouterr().out
    assert "saved" in printed and "own classifier acc" in printed
    assert main(["list", str(tmp_path)]) == 0
    assert "lambda_hot" in capsys.readouterr().out
    assert main(["eval", str(out), "--json", "--no-classifiers"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "lambda_hot" and 0.0 <= report["metrics"]["acc_own"] <= 1.0


def test_eval_reproduces_the_metrics_a_run_stored_with_its_own_seed(tmp_path, capsys):
    from latentviz.checkpoints import read_meta

    out = tmp_path / "vae.safetensors"
    assert main(["train", "--variant", "vae", "--dataset", "digits", "--epochs", "2",
                 "--hidden", "64", "--latent-dim", "12", "--seed", "5", "--no-classifiers",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--no-classifiers"]) == 0
    again = json.loads(capsys.readouterr().out)["metrics"]
    stored = read_meta(out).metrics
    for key in ("test_recon", "test_kl", "kmeans_acc", "kmeans_nmi"):
        assert again[key] == pytest.approx(stored[key], abs=1e-6), key


def test_a_bad_value_exits_2_naming_the_field(capsys):
    assert main(["train", "--variant", "kmeans", "--n-clusters", "1"]) == 2
    assert "n_clusters = 1 is not allowed: >= 2" in capsys.readouterr().err


def test_a_field_of_another_variant_is_refused(capsys):
    assert main(["train", "--variant", "vae", "--lam", "3"]) == 2
    assert "lam" in capsys.readouterr().err


def test_eval_of_a_bad_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    assert main(["eval", str(bad)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err


def test_treevae_grows_through_the_cli_and_eval_prints_the_tree_metrics(tmp_path, capsys):
    out = tmp_path / "tree.safetensors"
    rc = main(["train", "--variant", "treevae", "--dataset", "digits", "--schedule", "tiny",
               "--epochs", "3", "--max-leaves", "3", "--batch-size", "64",
               "--no-classifiers", "--out", str(out)])
    assert rc == 0 and out.exists()
    err = capsys.readouterr().err
    assert "--epochs is not used" in err        # the schedule sets TreeVAE's epochs
    assert main(["eval", str(out), "--no-classifiers"]) == 0
    printed = capsys.readouterr().out
    for label in ("dendrogram purity", "leaf purity", "leaf ACC", "leaf NMI", "KL / image"):
        assert label in printed, printed


def test_classifiers_can_be_chosen_and_a_wrong_name_is_refused(tmp_path, capsys):
    out = tmp_path / "vae.safetensors"
    assert main(["train", "--variant", "vae", "--dataset", "digits", "--epochs", "2",
                 "--hidden", "32", "--latent-dim", "4", "--classifiers", "knn,logreg",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    from latentviz.checkpoints import read_meta
    saved = read_meta(out).meta["metrics"]
    assert {"acc_knn", "acc_logreg"} <= set(saved) and "acc_forest" not in saved
    assert main(["eval", str(out), "--json", "--classifiers", "knn"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert "acc_knn" in metrics and "acc_forest" not in metrics and "acc_logreg" not in metrics
    assert main(["eval", str(out), "--classifiers", "knn,svm"]) == 2
    assert "classifiers = 'knn,svm' is not allowed" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.StringIO, _Terminal])
def test_progress_keeps_one_line_per_epoch_with_train_and_test_terms(stream):
    from latentviz.__main__ import ProgressBar
    from latentviz.train import Progress

    out = stream()
    bar = ProgressBar(out)
    bar(Progress(1, 2, 3, 10, {"recon": 51.25, "kl": 4.5}))
    bar(Progress(1, 2, 10, 10, {"recon": 50.0, "kl": 4.0}, "epoch", {"recon": 52.0, "kl": 4.1,
                                                                     "total": 56.1}))
    bar(Progress(2, 2, 10, 10, {"recon": 40.0, "kl": 5.0}, "epoch", None, stage="final"))
    bar.close()
    text = out.getvalue()
    lines = [line.split("\r")[-1] for line in text.split("\n") if "test" in line or "[final]" in line]
    assert lines[0].startswith("epoch 1/2 recon 50 kl 4 ") and lines[0].endswith(
        "| test recon 52 kl 4.1"), lines
    assert lines[1].startswith("epoch 2/2 [final] recon 40 kl 5 ") and "test" not in lines[1], lines
    if stream is io.StringIO:   # a log file gets the epoch lines only, no bar
        assert "\r" not in text and "recon 51.2" not in text and text.count("\n") == 2, text
    else:                       # a terminal also gets the running bar
        assert "epoch 1/2 |" in text and "recon 51.2 kl 4.5" in text, text
