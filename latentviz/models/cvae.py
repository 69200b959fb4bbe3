"""Conditional VAE (Sohn, Lee, Yan 2015), as the lambda-hot paper uses it (sec. 3.2).

The one-hot label is concatenated to the encoder's input and to z before decoding, so
the latent space need not hold the class; sampling class c decodes [z, onehot(c)].

    L(x, y) = E_q(z|x,y)[-log p(x|z,y)] + KL(q(z|x,y) || N(0, I))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import (GaussianEncoder, LatentModel, LossOutput, ModelConfig, Posterior,
                   elbo_terms, make_decoder, one_hot, reparameterize)


@dataclass(frozen=True)
class CVAEConfig(ModelConfig):
    pass


class CVAE(LatentModel):
    Config = CVAEConfig
    conditional = True

    def __init__(self, config: CVAEConfig):
        super().__init__(config)
        self.encoder = GaussianEncoder(config, cond_dim=config.n_classes)
        self.decoder = make_decoder(config, cond_dim=config.n_classes)

    def _label(self, y: Tensor | None, n: int) -> Tensor:
        if y is None:
            raise ValueError("the conditional VAE needs a class label y")
        return one_hot(y, self.config.n_classes).expand(n, -1) if y.dim() == 0 else \
            one_hot(y, self.config.n_classes)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        return self.encoder(x, self._label(y, len(x)))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(torch.cat([z, self._label(y, len(z))], dim=1))

    def loss(self, x: Tensor, y: Tensor) -> LossOutput:
        post = self.encode(x, y)
        terms = elbo_terms(post, self.decode(reparameterize(post), y), x,
                           likelihood=self.config.likelihood)
        return LossOutput(terms["recon"] + terms["kl"], terms)
