"""TreeVAE's networks and per-node math (Manduchi et al. 2023, sec. 2.2-2.3; reference
``models/networks.py``), and the stacked evaluation that runs many nodes' small networks
of one shape as one batched product.

A node's networks (bottom-up head, transformation, routers) are separate modules, one per
node, so a checkpoint names each node's weights. Evaluated one node at a time they cost
more in per-call overhead than in arithmetic (a Linear on 256 x 128 takes tens of
microseconds); :func:`run_stacked` stacks the weights of G modules of one architecture
and evaluates them as ``torch.bmm`` over inputs (G, B, F), with batch norm over the
concatenated channels (and the running statistics written back to each module), which is
the same function up to float rounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEAK = 0.3      # LeakyReLU slope of the reference code (the Keras default)
VAR_EPS = 1e-7  # variance floor, as in the reference's Normal(mu, sqrt(sigma + 1e-7))
KL_MAX = 1000.0  # per-sample cap on a node's KL, as in the reference (guards early steps)
# P(leaf|x) below which exact decoding skips a leaf's last layer for x (TreeVAE._exact_recon)
NEGLIGIBLE_P = 1e-20


# ----------------------------------------------------------------------------- networks

def _dense_block(n_in: int, n_out: int) -> nn.Sequential:
    """Linear (no bias: batch norm follows) + BN + LeakyReLU(0.3)."""
    return nn.Sequential(nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out),
                         nn.LeakyReLU(LEAK))


class ConvEncoder(nn.Module):
    """Reference ``EncoderSmallCnn``: three 3x3 stride-2 convolutions (no padding) with BN
    and LeakyReLU, 28 -> 13 -> 6 -> 2, flattened: 32 * 2 * 2 = 128 features."""

    def __init__(self, image_shape, channels):
        super().__init__()
        c, h, w = image_shape
        layers, prev = [], c
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, 2, 0, bias=False), nn.BatchNorm2d(ch),
                       nn.LeakyReLU(LEAK)]
            prev = ch
            h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = prev * h * w

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPEncoder(nn.Module):
    """For images that are not 28x28: x -> 2*hidden -> hidden, BN + LeakyReLU."""

    def __init__(self, image_shape, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), _dense_block(math.prod(image_shape), 2 * hidden),
                                 _dense_block(2 * hidden, hidden))
        self.out_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Reference ``DecoderSmallCnn``: z -> Linear(32*3*3) -> 3x3 -> ConvT 7x7 -> 14x14 ->
    28x28 logits (BN + LeakyReLU between)."""

    def __init__(self, image_shape, channels, z_dim: int):
        super().__init__()
        c3, c2, c1 = channels[2], channels[1], channels[0]
        self.grid = (c3, 3, 3)
        self.fc = _dense_block(z_dim, math.prod(self.grid))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 3, 2, 0, bias=False), nn.BatchNorm2d(c2), nn.LeakyReLU(LEAK),
            nn.ConvTranspose2d(c2, c1, 3, 2, 1, 1, bias=False), nn.BatchNorm2d(c1), nn.LeakyReLU(LEAK),
            nn.ConvTranspose2d(c1, image_shape[0], 3, 2, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.last(self.body(z))

    def body(self, z: Tensor) -> Tensor:
        """Every layer but the last (the ones with batch norm): (B, Z) -> (B, c1, 14, 14)."""
        # channels_last: the transposed convolutions run about 1.3x faster on CPU.
        h = self.fc(z).view(-1, *self.grid).contiguous(memory_format=torch.channels_last)
        return self.net[:-1](h)

    def last(self, h: Tensor) -> Tensor:
        """The last layer, row by row (no batch norm): (B, c1, 14, 14) -> logits."""
        return self.net[-1](h).contiguous()


class MLPDecoder(nn.Module):
    """For images that are not 28x28: z -> hidden -> 2*hidden -> pixels (logits)."""

    def __init__(self, image_shape, hidden: int, z_dim: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(_dense_block(z_dim, hidden), _dense_block(hidden, 2 * hidden),
                                 nn.Linear(2 * hidden, math.prod(image_shape)))

    def forward(self, z: Tensor) -> Tensor:
        return self.last(self.body(z))

    def body(self, z: Tensor) -> Tensor:
        """Every layer but the last (the ones with batch norm)."""
        return self.net[:-1](z)

    def last(self, h: Tensor) -> Tensor:
        """The last layer, row by row (no batch norm) -> logits."""
        return self.net[-1](h).view(-1, *self.image_shape)


class GaussianHead(nn.Module):
    """A node's bottom-up estimate (reference ``Dense``): d -> (mu_hat, sigma2_hat), with
    sigma2_hat = softplus(.) + eps."""

    def __init__(self, n_in: int, z_dim: int):
        super().__init__()
        self.lin = nn.Linear(n_in, 2 * z_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, s = self.lin(h).chunk(2, dim=1)
        return mu, F.softplus(s) + VAR_EPS


class Transformation(nn.Module):
    """p(z_i | z_pa) = N(mu_p, sigma2_p): a one-layer MLP of width ``hidden`` (sec. 2.2)."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.body = _dense_block(z_dim, hidden)
        self.head = GaussianHead(hidden, z_dim)

    def forward(self, z_parent: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.body(z_parent))


class Router(nn.Module):
    """Probability of going left: two hidden layers of width ``hidden`` then a sigmoid."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(_dense_block(n_in, hidden), _dense_block(hidden, hidden),
                                 nn.Linear(hidden, 1))

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.net(h))[:, 0]  # (B,); [:, 0] keeps a batch of one 1-d


# ----------------------------------------------------------------------------- math

def precision_weighted(mu_hat: Tensor, var_hat: Tensor, mu_p: Tensor, var_p: Tensor
                       ) -> tuple[Tensor, Tensor]:
    """LadderVAE posterior (Sonderby et al. 2016; TreeVAE sec. 2.3)::

        sigma2_q = 1 / (1/sigma2_hat + 1/sigma2_p)
        mu_q = (mu_hat / sigma2_hat + mu_p / sigma2_p) * sigma2_q
    """
    prec_hat, prec_p = 1.0 / var_hat, 1.0 / var_p           # (B, Z)
    var_q = 1.0 / (prec_hat + prec_p)
    return (mu_hat * prec_hat + mu_p * prec_p) * var_q, var_q


def kl_gauss(mu_q: Tensor, var_q: Tensor, mu_p: Tensor | float = 0.0,
             var_p: Tensor | float = 1.0) -> Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per sample, summed over the last dim -> (B,)
    (or (G, B) for stacked nodes)::

        1/2 sum_d [log(var_p / var_q) + (var_q + (mu_q - mu_p)^2) / var_p - 1]
    """
    var_p = torch.as_tensor(var_p, dtype=var_q.dtype, device=var_q.device)
    return 0.5 * (torch.log(var_p) - torch.log(var_q)
                  + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0).sum(dim=-1)


def kl_bernoulli(q: Tensor, p: Tensor, eps: float = 1e-7) -> Tensor:
    """KL(Ber(q) || Ber(p)) = q log(q/p) + (1-q) log((1-q)/(1-p)), eps inside the logs
    as in the reference -> (B,)."""
    return (q * (torch.log(q + eps) - torch.log(p + eps))
            + (1 - q) * (torch.log(1 - q + eps) - torch.log(1 - p + eps)))


class NodeOut(NamedTuple):
    """One node's inference results for a batch."""

    mu: Tensor               # (B, Z) posterior mean
    var: Tensor              # (B, Z) posterior variance
    z: Tensor                # (B, Z) sample (or the mean, on the mean path)
    kl: Tensor               # (B,) KL of z_i against its prior
    r_q: Tensor | None       # (B,) inference router: P(left | x), at splits
    kl_dec: Tensor | None    # (B,) KL(Ber(r_q) || Ber(r_p)), at splits



# ----------------------------------------------------------------------------- stacked

def _layers(module: nn.Module) -> list[nn.Module]:
    """The leaf modules of ``module`` in execution order (Sequentials flattened)."""
    return [m for m in module.modules() if not list(m.children())]


def stacked_linear(mods: Sequence[nn.Linear], x: Tensor) -> Tensor:
    """G Linear layers of one shape on their inputs x (G, B, in) -> (G, B, out)."""
    w = torch.stack([m.weight for m in mods]).transpose(1, 2)      # (G, in, out)
    if mods[0].bias is None:
        return torch.bmm(x, w)
    b = torch.stack([m.bias for m in mods]).unsqueeze(1)           # (G, 1, out)
    return torch.baddbmm(b, x, w)


def stacked_batch_norm(mods: Sequence[nn.BatchNorm1d], x: Tensor) -> Tensor:
    """G BatchNorm1d layers on x (G, B, F) -> (G, B, F): one batch norm over the G*F
    channels of (B, G*F), each module's channels its own; in training the updated running
    statistics are copied back into each module (as each module's own call would)."""
    m0 = mods[0]
    if any(m.training != m0.training for m in mods):
        raise ValueError("stacked batch norm: the modules are not all in the same mode")
    G, B, C = x.shape
    mean = torch.cat([m.running_mean for m in mods])
    var = torch.cat([m.running_var for m in mods])
    y = F.batch_norm(x.transpose(0, 1).reshape(B, G * C), mean, var,
                     torch.cat([m.weight for m in mods]), torch.cat([m.bias for m in mods]),
                     m0.training, m0.momentum, m0.eps)
    if m0.training:
        with torch.no_grad():
            for m, a, v in zip(mods, mean.split(C), var.split(C)):
                m.running_mean.copy_(a)
                m.running_var.copy_(v)
                m.num_batches_tracked.add_(1)
    return y.view(B, G, C).transpose(0, 1)


def run_stacked(modules: Sequence[nn.Module], x: Tensor) -> Tensor:
    """G modules of one architecture (Linear, BatchNorm1d and LeakyReLU layers in
    sequence) on their inputs x (G, B, in) -> (G, B, out)."""
    for layer in zip(*(_layers(m) for m in modules)):
        if isinstance(layer[0], nn.Linear):
            x = stacked_linear(layer, x)
        elif isinstance(layer[0], nn.BatchNorm1d):
            x = stacked_batch_norm(layer, x)
        elif isinstance(layer[0], nn.LeakyReLU):
            x = F.leaky_relu(x, layer[0].negative_slope)
        else:
            raise TypeError(f"run_stacked: no stacked form for {type(layer[0]).__name__}")
    return x


def stacked_gaussian(heads: Sequence[GaussianHead], h: Tensor) -> tuple[Tensor, Tensor]:
    """G GaussianHeads on h (G, B, F) -> mu_hat, sigma2_hat (G, B, Z)."""
    mu, s = stacked_linear([m.lin for m in heads], h).chunk(2, dim=-1)
    return mu, F.softplus(s) + VAR_EPS


def stacked_transform(mods: Sequence[Transformation], z_parent: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """G Transformations on z_parent (G, B, Z) -> mu_p, sigma2_p (G, B, Z)."""
    return stacked_gaussian([m.head for m in mods], run_stacked([m.body for m in mods], z_parent))


def stacked_router(mods: Sequence[Router], h: Tensor) -> Tensor:
    """G Routers on h (G, B, F) -> P(left) (G, B)."""
    return torch.sigmoid(run_stacked([m.net for m in mods], h))[..., 0]
