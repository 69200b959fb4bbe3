"""Images decoded from chosen places in latent space: tensors in, tensors out, seeded.

- Cluster-centre samples: z = c_k + s * eps, eps ~ N(0, I), one row per centre, as in the
  lambda-hot paper's Figure 6 (Wang, Blair, Belkhale, sec. 5.2: random samples around the
  k-means prior's centres). Centres come from the model (``model.centres`` of the k-means
  prior VAE) or from k-means on any model's latent means (:func:`latent_clusters`).
- Class rows: ``model.sample(n, y=c)`` for each class c (Figures 4 and 5: a conditional
  VAE's rows beside the lambda-hot VAE's, whose prior for class c is N(lambda e_c, I)).
- Interpolation: decode z(t) = (1 - t) mu(x_a) + t mu(x_b), t in [0, 1].
- Traversal: decode mu(x) + v e_d for offsets v along one latent dimension d.

Every function returns images in [0, 1] of shape (rows, n, C, H, W) or (n, C, H, W) on
the CPU, and draws its noise from a ``torch.Generator`` seeded by ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .models.base import LatentModel


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _labels(y, n: int, device) -> Tensor | None:
    if y is None:
        return None
    return torch.as_tensor(y, dtype=torch.long).reshape(-1).expand(n).to(device)


@torch.no_grad()
def decode(model: LatentModel, z: Tensor, y=None) -> Tensor:
    """Images in [0, 1] decoded from z (N, D) (with labels y where the model needs them)."""
    model.eval()
    z = torch.as_tensor(z, dtype=torch.float32).to(model.device)
    return torch.sigmoid(model.decode(z, _labels(y, len(z), model.device))).cpu()


@dataclass
class LatentClusters:
    """k-means on latent means: centres (K, D) and each point's cluster (N,)."""

    centres: np.ndarray
    labels: np.ndarray


def latent_clusters(z: np.ndarray, k: int, random_state: int = 0) -> LatentClusters:
    """k-means (scikit-learn, 10 restarts) on latent means z (N, D)."""
    from sklearn.cluster import KMeans

    z = np.asarray(z, dtype=np.float64)
    if not 2 <= k <= len(z):
        raise ValueError(f"k must be between 2 and the number of points ({len(z)}), not {k}")
    km = KMeans(k, n_init=10, random_state=random_state).fit(z)
    return LatentClusters(km.cluster_centers_, km.labels_)


def model_centres(model: LatentModel) -> np.ndarray | None:
    """The model's own cluster centres (the k-means prior VAE's), or None."""
    centres = getattr(model, "centres", None)
    if centres is None or not torch.is_tensor(centres):
        return None
    return centres.detach().cpu().numpy()


@torch.no_grad()
def centre_samples(model: LatentModel, centres: np.ndarray, n_per_centre: int, *,
                   std: float | np.ndarray = 1.0, y=None, seed: int = 0) -> Tensor:
    """n samples around each centre: z = c_k + std * eps -> (K, n, C, H, W).

    std is a scalar (1 = the unit variance of the k-means prior N(c_k, I), as in Figure 6)
    or one per centre and dimension (K, D). y: one class per centre, for conditional models.
    """
    c = torch.as_tensor(np.asarray(centres), dtype=torch.float32)  # (K, D)
    k, d = c.shape
    s = torch.as_tensor(np.broadcast_to(np.asarray(std, dtype=np.float32), (k, d)).copy())
    eps = torch.randn(k, n_per_centre, d, generator=_generator(seed))
    z = (c[:, None] + s[:, None] * eps).reshape(k * n_per_centre, d)
    labels = None if y is None else torch.as_tensor(np.asarray(y)).long().repeat_interleave(n_per_centre)
    return decode(model, z, labels).reshape(k, n_per_centre, *model.config.image_shape)


def samples_by_class(variant: str | LatentModel) -> bool:
    """Whether a variant's ``sample(n, y=c)`` draws class c: a conditional decoder (CVAE)
    or a supervised prior whose mean depends on the class (lambda-hot). The k-means
    prior's mean depends on y too, but there y is a cluster, not a class."""
    from .models import VARIANTS

    name = variant if isinstance(variant, str) else variant.variant_name
    v = VARIANTS.get(name or "")
    if v is None:
        return False
    return v.cls.conditional or (v.supervised and v.cls.prior_mean is not LatentModel.prior_mean)


@torch.no_grad()
def class_rows(model: LatentModel, n_per_class: int, classes=None, seed: int = 0) -> Tensor:
    """One row of ``model.sample(n, y=c)`` per class c -> (len(classes), n, C, H, W)."""
    model.eval()
    classes = range(model.config.n_classes) if classes is None else classes
    g = _generator(seed)
    rows = [model.sample(n_per_class, y=torch.tensor(int(c), device=model.device),
                         generator=g).cpu() for c in classes]
    return torch.stack(rows)


@torch.no_grad()
def random_samples(model: LatentModel, n: int, seed: int = 0) -> Tensor:
    """n samples from the model's prior -> (n, C, H, W). Where the prior is one Gaussian
    per class (lambda-hot) or the decoder takes the class (CVAE), the samples cycle
    through the classes, so they come from the whole prior, not from N(0, I)."""
    model.eval()
    g = _generator(seed)
    if samples_by_class(model):
        y = torch.arange(n, device=model.device) % model.config.n_classes
        return model.sample(n, y=y, generator=g).cpu()
    return model.sample(n, generator=g).cpu()


@torch.no_grad()
def encode_mean(model: LatentModel, x: Tensor, y=None) -> Tensor:
    """Posterior means of images x (B, C, H, W) -> (B, D) on the CPU."""
    model.eval()
    x = x.to(model.device)
    labels = _labels(y, len(x), model.device) if model.conditional else None
    return model.embed(x, labels).float().cpu()


@torch.no_grad()
def interpolate(model: LatentModel, x_a: Tensor, x_b: Tensor, steps: int = 8, *,
                y_a=None, y_b=None) -> Tensor:
    """Decode the straight line between the latent means of two images -> (steps, C, H, W).

    A conditional model decodes the first half of the path with y_a and the second half
    with y_b (its label is not part of z, so it cannot be interpolated there).
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, not {steps}")
    if model.conditional and (y_a is None or y_b is None):
        raise ValueError("a conditional model needs the classes y_a and y_b")
    za = encode_mean(model, x_a[None] if x_a.dim() == 3 else x_a, y_a)[0]
    zb = encode_mean(model, x_b[None] if x_b.dim() == 3 else x_b, y_b)[0]
    t = torch.linspace(0.0, 1.0, steps)[:, None]
    z = (1 - t) * za + t * zb  # (steps, D)
    y = None
    if model.conditional:
        y = torch.where(t[:, 0] < 0.5, int(y_a), int(y_b)).long()
    return decode(model, z, y)


@torch.no_grad()
def traverse(model: LatentModel, x: Tensor, dim: int, *, span: float = 3.0, steps: int = 9,
             y=None) -> Tensor:
    """Decode mu(x) + v e_dim for v evenly spaced in [-span, span] -> (steps, C, H, W)."""
    d = model.config.latent_dim
    if not 0 <= dim < d:
        raise ValueError(f"dim must be in 0..{d - 1}, not {dim}")
    if model.conditional and y is None:
        raise ValueError("a conditional model needs the class y of the image")
    z0 = encode_mean(model, x[None] if x.dim() == 3 else x, y)[0]
    z = z0.repeat(steps, 1)
    z[:, dim] += torch.linspace(-span, span, steps)
    return decode(model, z, y if model.conditional else None)
