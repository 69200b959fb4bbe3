"""Fixed-output VAE (Yevick, "Branched Variational Autoencoder Classifiers",
arXiv 2401.02526, sec. "fixed output VAE").

The input is the full dataset, but the decoder's reconstruction target is a predefined
output T_y for the sample's class, not the sample itself:

    L(x, y) = E_q(z|x)[-log p(T_y | z)] + KL(q(z|x) || N(0, I))

so the encoder must map every image of class y to latents that decode to T_y, which
separates the classes in the latent space. T is one of: the class-mean image
(``class_mean``), one fixed training exemplar per class (``exemplar``, chosen with a
seed), or a Gaussian blob per class placed on a ring (``gaussian``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import LossOutput, param, reparameterize, elbo_terms
from .vae import VAE, VAEConfig


@dataclass(frozen=True)
class FixedOutputConfig(VAEConfig):
    target: str = param("class_mean", "the fixed output per class",
                        choices=("class_mean", "exemplar", "gaussian"))
    blob_sigma: float = param(0.12, "width of the gaussian targets, as a fraction of the image",
                              min=0.01, max=1.0)


def class_targets(kind: str, x: Tensor, y: Tensor, n_classes: int, sigma: float = 0.12,
                  seed: int = 0) -> Tensor:
    """The fixed output T_c for each class c -> (C, channels, H, W) in [0, 1]."""
    _, c, h, w = x.shape
    if kind == "class_mean":
        sums = torch.zeros(n_classes, c * h * w, device=x.device).index_add_(0, y, x.flatten(1).float())
        counts = torch.bincount(y, minlength=n_classes).clamp(min=1).unsqueeze(1)
        return (sums / counts).view(n_classes, c, h, w)
    if kind == "exemplar":
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(y), generator=gen).to(y.device)
        # First occurrence of each class in a seeded shuffle; vectorised via scatter.
        first = torch.full((n_classes,), len(y), device=y.device, dtype=torch.long)
        first.scatter_reduce_(0, y[order], torch.arange(len(y), device=y.device), "amin")
        return x[order[first.clamp(max=len(y) - 1)]].float()
    if kind == "gaussian":
        angles = torch.arange(n_classes, dtype=torch.float32) * (2 * math.pi / n_classes)
        cy = 0.5 + 0.3 * torch.sin(angles)
        cx = 0.5 + 0.3 * torch.cos(angles)
        gy = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        gx = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        d2 = (gy[None, :, None] - cy[:, None, None]) ** 2 + (gx[None, None, :] - cx[:, None, None]) ** 2
        blob = torch.exp(-d2 / (2 * sigma ** 2))  # (C, H, W)
        return blob.unsqueeze(1).expand(n_classes, c, h, w).contiguous().to(x.device)
    raise ValueError(f"unknown target {kind!r}")


class FixedOutputVAE(VAE):
    Config = FixedOutputConfig

    def __init__(self, config: FixedOutputConfig):
        super().__init__(config)
        self.register_buffer("targets", torch.zeros(config.n_classes, *config.image_shape))

    def prepare(self, data) -> None:
        self.targets.copy_(class_targets(self.config.target, data.x_train, data.y_train,
                                         self.config.n_classes, self.config.blob_sigma))

    def loss(self, x: Tensor, y: Tensor) -> LossOutput:
        post = self.encode(x)
        terms = elbo_terms(post, self.decode(reparameterize(post)), self.targets[y.long()],
                           likelihood=self.config.likelihood)
        return LossOutput(terms["recon"] + self.config.beta * terms["kl"], terms,
                          {"kl": ("beta", self.config.beta)})
