"""The contract every latentviz model keeps, and the pieces the variants share.

A variant changes only what its paper changes (prior mean, target, an extra head,
conditioning); everything else is a function here that the variants call.

Evidence lower bound of a Gaussian VAE (Kingma & Welling 2014, eq. 3), per image::

    L(x) = E_q(z|x)[-log p(x|z)] + beta * KL(q(z|x) || p(z))   (minimised)

with q(z|x) = N(mu, diag(exp(logvar))), p(x|z) a Bernoulli decoder on grey levels in
[0, 1] (binary cross-entropy summed over pixels) or, with ``likelihood = "gaussian"``, a
Gaussian one (squared error summed over pixels, as the TreeVAE paper uses for CIFAR-10 and
CelebA), and p(z) = N(m, I) where m is 0 for a plain VAE and the variant's prior mean
otherwise.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Loss-term names are fixed across variants so the trainer, the CLI and the app's live
# curves need no per-variant code.
TERM_NAMES = ("recon", "kl", "cls", "kl_nodes", "kl_decisions")
LIKELIHOODS = ("bernoulli", "gaussian")


class ConfigError(ValueError):
    """A hyperparameter outside its allowed range; the message names field and range."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name} = {value!r} is not allowed: {allowed}")


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          min_exclusive: bool = False, choices: tuple | None = None, paper: str | None = None):
    """A config field that carries its own help text and range.

    The same metadata drives validation, the CLI flags and the app's widgets.
    """
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive,
            "choices": choices, "paper": paper}
    return field(default=default, metadata=meta)


def _check_field(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    if not meta:
        return
    choices = meta.get("choices")
    if choices is not None:
        if value not in choices:
            raise ConfigError(f.name, value, f"one of {', '.join(map(str, choices))}")
        return
    lo, hi, excl = meta.get("min"), meta.get("max"), meta.get("min_exclusive")
    if lo is None and hi is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f.name, value, "a number")
    if f.type in ("int", int) and not float(value).is_integer():
        raise ConfigError(f.name, value, "a whole number")
    if not math.isfinite(float(value)):
        raise ConfigError(f.name, value, "a finite number")
    rng = _range_text(lo, hi, excl)
    if lo is not None and (value <= lo if excl else value < lo):
        raise ConfigError(f.name, value, rng)
    if hi is not None and value > hi:
        raise ConfigError(f.name, value, rng)


def _range_text(lo, hi, excl) -> str:
    left = f"> {lo}" if excl else f">= {lo}"
    if lo is not None and hi is not None:
        return f"{left} and <= {hi}"
    if lo is not None:
        return left
    return f"<= {hi}"


@dataclass(frozen=True)
class Config:
    """Base of every config: validated on construction from field metadata.

    Subclasses add fields with :func:`param` and cross-field checks in ``validate``.
    """

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # JSON gives lists; frozen dataclasses want hashable tuples.
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            if f.type in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            _check_field(f, getattr(self, f.name))
        self.validate()

    def validate(self) -> None:  # cross-field rules
        pass

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(unknown[0], d[unknown[0]], f"a field of {cls.__name__}: "
                              + ", ".join(sorted(names)))
        return cls(**d)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig(Config):
    """What every variant has: the data's shape, the latent size and the backbone."""

    image_shape: tuple = param((1, 28, 28), "channels, height, width of the images")
    n_classes: int = param(10, "number of classes in the dataset", min=2)
    latent_dim: int = param(20, "size D of the latent vector z", min=1, max=512,
                            paper="20 in the lambda-hot paper (10 class dims + 10 shared)")
    backbone: str = param("mlp", "encoder/decoder network: auto = conv where height and width "
                          "are multiples of 4, else mlp", choices=("mlp", "conv", "auto"))
    hidden: int = param(400, "width of the first hidden layer (the second is half)", min=8, max=4096)
    likelihood: str = param("bernoulli", "p(x|z): bernoulli = binary cross-entropy (grey "
                            "levels, the papers' MNIST), gaussian = squared error (natural "
                            "colour images); recon is comparable only within one",
                            choices=LIKELIHOODS,
                            paper="bernoulli for MNIST; gaussian (MSE) for CIFAR-10 and CelebA "
                            "in the TreeVAE paper")

    @property
    def resolved_backbone(self) -> str:
        """The backbone built: ``auto`` is conv where the size allows, else mlp."""
        if self.backbone != "auto":
            return self.backbone
        _, h, w = self.image_shape
        return "conv" if h % 4 == 0 and w % 4 == 0 and min(h, w) >= 8 else "mlp"

    def validate(self):
        shape = tuple(self.image_shape)
        if len(shape) != 3 or any(int(s) < 1 for s in shape):
            raise ConfigError("image_shape", shape, "three positive sizes (C, H, W)")
        if self.backbone == "conv" and (shape[1] % 4 or shape[2] % 4):
            raise ConfigError("backbone", "conv", "images whose height and width are "
                              f"multiples of 4 (got {shape[1]}x{shape[2]}); use mlp")


class Posterior(NamedTuple):
    mu: Tensor      # (B, D)
    logvar: Tensor  # (B, D)


@dataclass
class LossOutput:
    """The total to minimise and its named, unweighted terms (means over the batch).

    ``weights`` names the config setting that weighs a term in the total and its value
    ({"kl": ("beta", 5.0)}), so a divergence can name the setting to change."""

    total: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, tuple[str, float]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- shared math

def reparameterize(post: Posterior) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014, sec. 2.4)."""
    eps = torch.randn_like(post.mu)
    return post.mu + torch.exp(0.5 * post.logvar) * eps


def kl_normal(post: Posterior, prior_mu: Tensor | float = 0.0) -> Tensor:
    """KL(N(mu, diag sigma^2) || N(m, I)) per sample, summed over latent dims.

    KL = 1/2 * sum_d (sigma_d^2 + (mu_d - m_d)^2 - 1 - log sigma_d^2)      -> (B,)
    """
    mu, logvar = post
    return 0.5 * (logvar.exp() + (mu - prior_mu).pow(2) - 1.0 - logvar).sum(dim=1)


def recon_bce(logits: Tensor, target: Tensor) -> Tensor:
    """-log p(x|z) of a Bernoulli decoder, summed over pixels, per image -> (B,).

    BCE(x, x_hat) = -sum_i [x_i log x_hat_i + (1 - x_i) log(1 - x_hat_i)], computed from
    logits for stability; grey levels in [0, 1] are used as soft targets (no binarisation).
    """
    return F.binary_cross_entropy_with_logits(
        logits.float(), target.float(), reduction="none").flatten(1).sum(dim=1)


def recon_sse(logits: Tensor, target: Tensor) -> Tensor:
    """-log p(x|z) of a Gaussian decoder N(sigmoid(logits), 1/2 I) up to its constant:
    the squared error sum_i (x_i - x_hat_i)^2 per image -> (B,). The mean is squashed into
    [0, 1] like the Bernoulli one, so every page shows either the same way."""
    return (torch.sigmoid(logits.float()) - target.float()).pow(2).flatten(1).sum(dim=1)


def recon_nll(logits: Tensor, target: Tensor, likelihood: str = "bernoulli") -> Tensor:
    """-log p(x|z) per image -> (B,) under the config's ``likelihood``."""
    return recon_sse(logits, target) if likelihood == "gaussian" else recon_bce(logits, target)


def one_hot(y: Tensor, n_classes: int) -> Tensor:
    return F.one_hot(y.long(), n_classes).float()


# ----------------------------------------------------------------------------- backbones

class MLPEncoder(nn.Module):
    """x (B, C, H, W) [+ condition (B, K)] -> feature (B, hidden)."""

    def __init__(self, image_shape, hidden: int, cond_dim: int = 0):
        super().__init__()
        n_in = math.prod(image_shape) + cond_dim
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden // 2), nn.ReLU())
        self.out_dim = hidden // 2

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.net(h)


class MLPDecoder(nn.Module):
    """z (B, D) [+ condition] -> logits (B, C, H, W)."""

    def __init__(self, image_shape, hidden: int, z_dim: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(nn.Linear(z_dim, hidden // 2), nn.ReLU(),
                                 nn.Linear(hidden // 2, hidden), nn.ReLU(),
                                 nn.Linear(hidden, math.prod(image_shape)))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)


class ConvEncoder(nn.Module):
    """Two stride-2 4x4 convolutions (C->32->64), then a dense layer; the condition,
    if any, joins at the dense layer."""

    def __init__(self, image_shape, hidden: int, cond_dim: int = 0):
        super().__init__()
        c, h, w = image_shape
        self.conv = nn.Sequential(nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
                                  nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten())
        n_flat = 64 * (h // 4) * (w // 4)
        self.fc = nn.Sequential(nn.Linear(n_flat + cond_dim, hidden // 2), nn.ReLU())
        self.out_dim = hidden // 2

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.conv(x)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.fc(h)


class ConvDecoder(nn.Module):
    """z -> dense -> two stride-2 transposed convolutions (64->32->C) -> logits."""

    def __init__(self, image_shape, hidden: int, z_dim: int):
        super().__init__()
        c, h, w = image_shape
        self.grid = (64, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(z_dim, hidden // 2), nn.ReLU(),
                                nn.Linear(hidden // 2, math.prod(self.grid)), nn.ReLU())
        self.deconv = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                    nn.ConvTranspose2d(32, c, 4, 2, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(-1, *self.grid))


BACKBONES = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}


class GaussianEncoder(nn.Module):
    """Backbone feature -> (mu, logvar) of q(z|x)."""

    def __init__(self, config: ModelConfig, cond_dim: int = 0):
        super().__init__()
        enc_cls, _ = BACKBONES[config.resolved_backbone]
        self.body = enc_cls(config.image_shape, config.hidden, cond_dim)
        self.mu = nn.Linear(self.body.out_dim, config.latent_dim)
        self.logvar = nn.Linear(self.body.out_dim, config.latent_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Posterior:
        h = self.body(x, cond)
        # Clamp keeps exp(logvar) finite under bf16 and early large steps.
        return Posterior(self.mu(h), self.logvar(h).clamp(-12.0, 8.0))


def make_decoder(config: ModelConfig, cond_dim: int = 0) -> nn.Module:
    _, dec_cls = BACKBONES[config.resolved_backbone]
    return dec_cls(config.image_shape, config.hidden, config.latent_dim + cond_dim)


@dataclass(frozen=True)
class Variant:
    name: str
    cls: type
    title: str
    summary: str
    paper: str
    defaults: dict = field(default_factory=dict)
    supervised: bool = False

    def config(self, **overrides) -> "ModelConfig":
        """The variant's config: its defaults, then the overrides, validated."""
        values = {**self.defaults, **overrides}
        return self.cls.Config.from_dict(values)


# ----------------------------------------------------------------------------- the contract

class LatentModel(nn.Module):
    """One interface for every variant.

    encode(x, y) -> Posterior; decode(z, y) -> logits; loss(x, y) -> LossOutput;
    embed(x, y) -> what the app projects (the posterior mean); prepare(data) runs once
    before training (k-means init, fixed targets); on_epoch_end(data) after each epoch.
    """

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: whether encode/decode need the label (CVAE); the app then asks for a class.
    conditional: ClassVar[bool] = False
    #: whether the model predicts classes itself (see ``predict``).
    can_classify: ClassVar[bool] = False
    #: the registry name it was built as ("vae" and "beta_vae" share a class).
    variant_name: str | None = None

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # -- to be provided by variants
    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor) -> LossOutput:
        raise NotImplementedError

    # -- shared behaviour
    def embed(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encode(x, y).mu

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean reconstruction in [0, 1] from the posterior mean."""
        return torch.sigmoid(self.decode(self.encode(x, y).mu, y))

    def predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not classify")

    def prior_mean(self, y: Tensor | None, n: int) -> Tensor:
        """Mean of p(z) for n samples (of classes y where the prior depends on them)."""
        return torch.zeros(n, self.config.latent_dim, device=self.device)

    def sample(self, n: int, y: Tensor | None = None, generator=None) -> Tensor:
        """Images in [0, 1] decoded from z ~ p(z) (of class y where it applies)."""
        z = torch.randn(n, self.config.latent_dim, generator=generator, device="cpu").to(self.device)
        z = z + self.prior_mean(y, n)
        return torch.sigmoid(self.decode(z, y))

    def prepare(self, data) -> None:
        """Called once before the first epoch with the training data."""

    def on_epoch_end(self, data) -> None:
        """Called after every epoch (k-means refit, tree growth)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def extra_state(self) -> dict:
        """JSON-able state beyond tensors (TreeVAE's topology); saved in the checkpoint."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def elbo_terms(post: Posterior, logits: Tensor, target: Tensor,
               prior_mu: Tensor | float = 0.0, likelihood: str = "bernoulli") -> dict[str, Tensor]:
    """The two ELBO terms as batch means: recon = -log p(x|z), kl = KL(q || N(m, I))."""
    return {"recon": recon_nll(logits, target, likelihood).mean(),
            "kl": kl_normal(post, prior_mu).mean()}
