"""Metrics, from scikit-learn and scipy wherever they exist.

- Reconstruction: BCE summed over pixels per test image (the lambda-hot paper's Table 1),
  from one seeded z sample per image, as in the training loss: ``test_recon``. A model
  with the Gaussian likelihood reports its squared error as ``test_recon_sse`` instead, so
  a recon figure is only ever compared with one of the same likelihood.
- Classification on the latents (branched-VAE paper): classifiers fitted on train-set
  latent means, scored on test-set means: logistic regression, a small MLP ("NN"),
  kNN (k = 10) and a random forest.
- The model's own classifier: lambda-hot argmax of the class dims, the BVAE branch.
- Clustering: k-means with K = number of classes on the test latents (or the model's own
  clusters) scored by ACC (Hungarian matching of clusters to classes), NMI and ARI.
- Latent activity (Burda, Grosse & Salakhutdinov 2016, Section 5.2): unit u is active if
  A_u = Cov_x(E_q(z|x)[z_u]) > 0.01; with the per-dimension KL it shows posterior collapse.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .data import Dataset
from .embeddings import Encoded, encode_split
from .models.base import LatentModel
from .train import evaluate

log = logging.getLogger(__name__)


def cluster_acc(y_true, y_pred) -> float:
    """Unsupervised accuracy: the best one-to-one map of clusters to classes (Hungarian).

    ACC = max_m (1/N) sum_i 1[y_i = m(c_i)]; with more clusters than classes the extra
    clusters map to nothing and count as errors, which is the usual definition.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    if y_true.size == 0:
        return float("nan")
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    w = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(w, (p, t), 1)
    rows, cols = linear_sum_assignment(-w)
    return float(w[rows, cols].sum() / y_true.size)


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    return {"acc": cluster_acc(y_true, y_pred),
            "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
            "ari": float(adjusted_rand_score(y_true, y_pred))}


def kmeans_labels(z: np.ndarray, k: int, random_state: int = 0) -> np.ndarray:
    return KMeans(k, n_init=10, random_state=random_state).fit_predict(np.asarray(z, np.float64))


CLASSIFIERS = ("logreg", "nn", "knn", "forest")


def latent_classifiers(train: Encoded, test: Encoded, which=CLASSIFIERS, random_state: int = 0,
                       max_train: int | None = 20000) -> dict[str, float]:
    """Test accuracy of classifiers fitted on train-set latent means."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    zt, yt = train.z, train.y
    if max_train and len(yt) > max_train:  # bounds the cost on 60k-image sets
        idx = np.random.default_rng(random_state).choice(len(yt), max_train, replace=False)
        zt, yt = zt[idx], yt[idx]
    make = {
        "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "nn": lambda: make_pipeline(StandardScaler(), MLPClassifier(
            (128,), max_iter=300, early_stopping=True, random_state=random_state)),
        "knn": lambda: KNeighborsClassifier(n_neighbors=10),
        "forest": lambda: RandomForestClassifier(100, n_jobs=-1, random_state=random_state),
    }
    return {f"acc_{name}": float(make[name]().fit(zt, yt).score(test.z, test.y)) for name in which}


ACTIVE_THRESHOLD = 0.01   # Burda et al. 2016's threshold on A_u


@dataclass(frozen=True)
class LatentActivity:
    """Per latent dimension u, over a split: A_u = Var_x(mu_u(x)) and the mean KL term
    KL_u = E_x[ 1/2 (sigma_u^2 + (mu_u - m_u)^2 - 1 - log sigma_u^2) ] to the model's prior
    N(m, I) (m: the variant's prior mean, e.g. lambda onehot(y) for lambda-hot)."""

    variance: np.ndarray          # (D,) A_u
    kl: np.ndarray                # (D,) nats per image

    @property
    def active(self) -> np.ndarray:
        return self.variance > ACTIVE_THRESHOLD

    @property
    def n_active(self) -> int:
        return int(self.active.sum())


@torch.no_grad()
def latent_activity(model: LatentModel, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int = 4096) -> LatentActivity:
    """A_u and KL_u of every latent dimension (see :class:`LatentActivity`)."""
    model.eval()
    dev = model.device
    mus, kls = [], []
    prior_mean = getattr(model, "kl_prior_mean", None)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        post = model.encode(xb, yb if model.conditional else None)
        m = prior_mean(post, yb) if prior_mean is not None else 0.0
        mu, logvar = post.mu.float(), post.logvar.float()
        kls.append((0.5 * (logvar.exp() + (mu - m) ** 2 - 1.0 - logvar)).sum(0).cpu())
        mus.append(mu.cpu())
    mu = torch.cat(mus)
    return LatentActivity(mu.var(0, unbiased=False).numpy(),
                          (torch.stack(kls).sum(0) / max(len(x), 1)).numpy())


@torch.no_grad()
def recon_errors(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                 batch_size: int = 4096) -> np.ndarray:
    """Per image, the binary cross-entropy (nats, summed over pixels) between x and its
    mean reconstruction sigmoid(decode(mu(x))) -> (N,): how well the model explains x.
    Its percentile among the test set's says how unlike the training data an input is."""
    model.eval()
    dev = model.device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        yb = None if y is None or not model.conditional else y[i:i + batch_size].to(dev)
        p = model.reconstruct(xb, yb).float().clamp(1e-6, 1 - 1e-6)
        bce = -(xb * p.log() + (1 - xb) * (1 - p).log())
        out.append(bce.flatten(1).sum(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def evaluate_model(model: LatentModel, data: Dataset, *, classifiers=CLASSIFIERS,
                   random_state: int = 0, batch_size: int = 4096) -> dict[str, float]:
    """Every metric that applies to ``model``, as a flat dict of floats."""
    t0 = time.perf_counter()
    model.eval()
    dev = model.device
    data = data.to(dev)
    out: dict[str, float] = {}
    terms = evaluate(model, data.x_test, data.y_test, batch_size, seed=random_state)
    gaussian = getattr(model.config, "likelihood", "bernoulli") == "gaussian"
    out["test_recon_sse" if gaussian else "test_recon"] = terms["recon"]
    # The ELBO's KL part: "kl" for the flat VAEs; TreeVAE's node and decision KLs summed.
    kls = [v for k, v in terms.items() if k == "kl" or k.startswith("kl_")]
    out["test_kl"] = float(sum(kls)) if kls else float("nan")
    out["test_loss"] = terms["total"]
    test = encode_split(model, data.x_test, data.y_test, batch_size)
    if classifiers:
        train = encode_split(model, data.x_train, data.y_train, batch_size)
        out.update(latent_classifiers(train, test, classifiers, random_state))
    if test.predicted is not None:
        out["acc_own"] = float((test.predicted == test.y).mean())
    km = kmeans_labels(test.z, data.n_classes, random_state)
    out.update({f"kmeans_{k}": v for k, v in clustering_scores(test.y, km).items()})
    if test.cluster is not None:
        out.update({f"own_{k}": v for k, v in clustering_scores(test.y, test.cluster).items()})
    if getattr(model, "tree", None) is None:  # TreeVAE's latents are per node
        out["active_units"] = float(latent_activity(model, data.x_test, data.y_test,
                                                    batch_size).n_active)
    extra = getattr(model, "extra_metrics", None)
    if extra is not None:
        out.update(extra(data))
    log.info("evaluated %s in %.1fs", type(model).__name__, time.perf_counter() - t0)
    return out


METRIC_LABELS = {
    "test_recon": "recon BCE / image", "test_recon_sse": "recon SSE / image", "test_kl": "KL / image", "test_loss": "loss / image",
    "acc_logreg": "logreg acc", "acc_nn": "NN acc", "acc_knn": "kNN acc",
    "acc_forest": "forest acc", "acc_own": "own classifier acc",
    "kmeans_acc": "k-means ACC", "kmeans_nmi": "k-means NMI", "kmeans_ari": "k-means ARI",
    "own_acc": "own clusters ACC", "own_nmi": "own clusters NMI", "own_ari": "own clusters ARI",
    "dp": "dendrogram purity", "lp": "leaf purity", "leaf_acc": "leaf ACC",
    "leaf_nmi": "leaf NMI", "n_leaves": "leaves", "n_leaves_mass": "leaves with >= 1% of images",
    "tree_depth": "tree depth",
    "active_units": "active units",
}
