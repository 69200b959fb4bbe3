"""VAE (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

One class for both: beta is a config field. The lambda-hot paper (Wang, Blair, Belkhale,
sec. 3.1 and 5.1) uses beta = 5.0 as its beta-VAE baseline; beta = 1 is the plain VAE.

    L(x) = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I))
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import (GaussianEncoder, LatentModel, LossOutput, ModelConfig, Posterior,
                   elbo_terms, make_decoder, param, reparameterize)


@dataclass(frozen=True)
class VAEConfig(ModelConfig):
    beta: float = param(1.0, "weight of the KL term (1 = VAE, >1 = beta-VAE)", min=0.0,
                        paper="beta-VAE baseline uses 5.0 (lambda-hot paper, sec. 5.1)")


class VAE(LatentModel):
    Config = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.encoder = GaussianEncoder(config)
        self.decoder = make_decoder(config)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def kl_prior_mean(self, post: Posterior, y: Tensor) -> Tensor | float:
        """Mean m of the prior N(m, I) that the KL term pulls q(z|x) towards."""
        return 0.0

    def loss(self, x: Tensor, y: Tensor) -> LossOutput:
        post = self.encode(x)
        terms = elbo_terms(post, self.decode(reparameterize(post)), x, self.kl_prior_mean(post, y),
                           self.config.likelihood)
        return LossOutput(terms["recon"] + self.config.beta * terms["kl"], terms,
                          {"kl": ("beta", self.config.beta)})
