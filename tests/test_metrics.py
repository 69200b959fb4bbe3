"""Metrics agree with hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from latentviz.metrics import cluster_acc, clustering_scores, evaluate_model


def test_acc_is_invariant_to_relabelling_the_clusters():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_acc(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    assert cluster_acc(y, np.array([5, 5, 7, 7, 9, 9])) == 1.0


def test_acc_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([1, 1, 0, 0, 0, 0])  # best map: 1->0 (2 right), 0->1 (3 right)
    assert cluster_acc(y, pred) == pytest.approx(5 / 6)


def test_acc_with_more_clusters_than_classes_counts_extras_as_errors():
    y = np.array([0, 0, 1, 1])
    assert cluster_acc(y, np.array([0, 1, 2, 3])) == pytest.approx(0.5)


def test_nmi_and_ari_are_one_for_a_perfect_clustering_and_near_zero_for_noise():
    y = np.repeat(np.arange(5), 40)
    perfect = clustering_scores(y, (y + 3) % 5)
    assert perfect == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    noise = clustering_scores(y, np.random.default_rng(0).integers(0, 5, len(y)))
    assert noise["ari"] < 0.05 and noise["nmi"] < 0.1


def test_evaluate_model_reports_what_applies(tiny_checkpoints, digits):
    import latentviz as lv
    model, _ = lv.load(tiny_checkpoints["lambda_hot"])
    m = evaluate_model(model, digits, classifiers=("logreg", "knn"))
    assert {"test_recon", "acc_logreg", "acc_knn", "acc_own", "kmeans_acc", "kmeans_nmi",
            "kmeans_ari"} <= set(m)
    vae, _ = lv.load(tiny_checkpoints["vae"])
    assert "acc_own" not in evaluate_model(vae, digits, classifiers=())
