"""Branched VAE classifier, BVAE (Yevick, "Branched Variational Autoencoder Classifiers",
arXiv 2401.02526, sec. "Method": the classifier branch).

A classifier branch reads the sampled latent z and is trained with cross-entropy on the
labels, so the latent space carries class information:

    L_BVAE = alpha * L_con + L_KL + lambda * L_C,    L_C = -log softmax(g(z))_y

The paper's summary gives no numeric alpha / lambda; we default to alpha = 1 and
lambda = 10 (with recon summed per image, lambda must be O(10) for CE to matter) and
sweep lambda in the report.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .base import LossOutput, param, reparameterize, elbo_terms
from .vae import VAE, VAEConfig


@dataclass(frozen=True)
class BranchedConfig(VAEConfig):
    alpha: float = param(1.0, "alpha: weight of the reconstruction term", min=0.0,
                         min_exclusive=True, paper="not stated numerically; 1.0")
    lam: float = param(10.0, "lambda: weight of the classifier branch's cross-entropy",
                       min=0.0, paper="not stated numerically; swept 0-100 in our report")
    branch_hidden: int = param(128, "width of the classifier branch's hidden layer", min=1)


class BranchedVAE(VAE):
    Config = BranchedConfig
    can_classify = True

    def __init__(self, config: BranchedConfig):
        super().__init__(config)
        self.branch = nn.Sequential(nn.Linear(config.latent_dim, config.branch_hidden),
                                    nn.ReLU(), nn.Linear(config.branch_hidden, config.n_classes))

    def loss(self, x: Tensor, y: Tensor) -> LossOutput:
        post = self.encode(x)
        z = reparameterize(post)
        terms = elbo_terms(post, self.decode(z), x, likelihood=self.config.likelihood)
        terms["cls"] = F.cross_entropy(self.branch(z).float(), y.long())
        c = self.config
        return LossOutput(c.alpha * terms["recon"] + c.beta * terms["kl"] + c.lam * terms["cls"], terms,
                          {"recon": ("alpha", c.alpha), "kl": ("beta", c.beta), "cls": ("lam", c.lam)})

    def predict(self, x: Tensor) -> Tensor:
        """The branch's class for the posterior mean."""
        return self.branch(self.encode(x).mu).argmax(dim=1)
