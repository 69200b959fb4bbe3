"""Encode a whole split in large batches, without gradients: the arrays the app projects."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .models.base import LatentModel


@torch.no_grad()
def encode_means(model: LatentModel, x: Tensor, y: Tensor | None = None,
                 batch_size: int = 4096) -> Tensor:
    """Posterior means (what ``model.embed`` returns) of x, batched -> (N, D)."""
    was = model.training
    model.eval()
    dev = model.device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        yb = None if y is None else y[i:i + batch_size].to(dev)
        out.append(model.embed(xb, yb if model.conditional else None).float())
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.config.latent_dim)


@torch.no_grad()
def batched(fn, x: Tensor, batch_size: int = 4096, device=None) -> Tensor:
    """Apply fn to x in batches on ``device`` and concatenate the results on the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device) if device else x[i:i + batch_size]).cpu()
                      for i in range(0, len(x), batch_size)])


@dataclass
class Encoded:
    """A split encoded by a model: latent means, labels and what the model predicts."""

    z: np.ndarray                 # (N, D) posterior means
    y: np.ndarray                 # (N,) true labels
    predicted: np.ndarray | None  # (N,) the model's own class (lambda-hot, branched)
    cluster: np.ndarray | None    # (N,) the model's own cluster (k-means centre, tree leaf)


@torch.no_grad()
def encode_split(model: LatentModel, x: Tensor, y: Tensor, batch_size: int = 4096) -> Encoded:
    model.eval()
    dev = model.device
    z = encode_means(model, x, y, batch_size)
    pred = batched(model.predict, x, batch_size, dev).numpy() if model.can_classify else None
    cluster = None
    if hasattr(model, "predict_cluster"):
        cluster = batched(model.predict_cluster, x, batch_size, dev).numpy()
    return Encoded(z.cpu().numpy(), y.cpu().numpy(), pred, cluster)
