"""K-means prior VAE (Wang, Blair, Belkhale, "Encouraging Categorical Meaning in the Latent
Space of a VAE", sec. 4 and 5.2): the unsupervised counterpart of lambda-hot.

The prior of a sample is N(c_k(x), I), where c_k(x) is the k-means centre nearest to its
posterior mean. Centres are fitted on the latent means of the untrained encoder, then
refitted after every epoch (warm-started from the previous centres, so cluster k keeps
its identity from one epoch to the next):

    L(x) = E_q[-log p(x|z)] + KL(q(z|x) || N(argmin_{c_k} ||mu(x) - c_k||, I))
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import Tensor

from .base import ConfigError, Posterior, param
from .vae import VAE, VAEConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KMeansConfig(VAEConfig):
    n_clusters: int = param(10, "K: number of k-means centres in the latent space", min=2,
                            max=1000, paper="10 (one per class; sec. 5.2)")
    fit_size: int = param(20000, "latent means used for each k-means refit (subsample)",
                          min=100)

    def validate(self):
        super().validate()
        if self.n_clusters < 2:
            raise ConfigError("n_clusters", self.n_clusters, ">= 2")


class KMeansPriorVAE(VAE):
    Config = KMeansConfig

    def __init__(self, config: KMeansConfig):
        super().__init__(config)
        # Saved with the checkpoint; meaningful once prepare() has run.
        self.register_buffer("centres", torch.zeros(config.n_clusters, config.latent_dim))

    def assign(self, mu: Tensor) -> Tensor:
        """Index of the nearest centre for each row of mu -> (B,)."""
        return torch.cdist(mu.float(), self.centres).argmin(dim=1)

    def kl_prior_mean(self, post: Posterior, y: Tensor) -> Tensor:
        # The assignment is a choice of prior, not a path for gradients.
        return self.centres[self.assign(post.mu.detach())]  # (B, D)

    def prior_mean(self, y: Tensor | None, n: int) -> Tensor:
        """With y read as a cluster index: samples around centre y (Figure 6)."""
        if y is None:
            idx = torch.randint(0, self.config.n_clusters, (n,), device=self.device)
        else:
            idx = y.long().expand(n) if y.dim() == 0 else y.long()
        return self.centres[idx.to(self.device)]

    def predict_cluster(self, x: Tensor) -> Tensor:
        return self.assign(self.encode(x).mu)

    @torch.no_grad()
    def refit(self, data) -> None:
        """Refit the centres on the latent means of a fixed subsample of the training set.
        Under torchrun each rank encodes its share of the subsample, rank 0 fits k-means on
        all of them and every rank receives its centres."""
        from .. import distributed
        from ..embeddings import encode_means  # local: embeddings imports models
        x = data.x_train
        k = min(self.config.fit_size, len(x))
        if k < self.config.n_clusters:  # k-means needs at least one sample per centre
            raise ConfigError("n_clusters", self.config.n_clusters, f"at most the {k} training "
                              "images k-means is fitted on (fewer clusters, or more data)")
        gen = torch.Generator().manual_seed(len(x))
        idx = torch.randperm(len(x), generator=gen)[:k].to(x.device)
        mu = distributed.gather_rows(encode_means(self, distributed.shard_rows(x[idx])), k)
        if distributed.is_main():
            mu = mu.cpu().numpy().astype(np.float64)
            fitted = bool(self.centres.abs().sum() > 0)
            init = self.centres.cpu().numpy().astype(np.float64) if fitted else "k-means++"
            km = KMeans(self.config.n_clusters, init=init, n_init=1, random_state=0, max_iter=100)
            km.fit(mu)
            shift = float(np.linalg.norm(km.cluster_centers_ - (init if fitted else 0.0),
                                         axis=1).mean())
            self.centres.copy_(torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
            log.debug("k-means refit: mean centre shift %.4f", shift)
        distributed.broadcast_(self.centres)

    def prepare(self, data) -> None:
        self.refit(data)  # centres of the untrained encoder (sec. 4)

    def on_epoch_end(self, data) -> None:
        self.refit(data)
