"""The variants, registered by name.

``VARIANTS[name]`` says which class implements a variant, with which config defaults and
from which paper; ``build(name, **config)`` makes a model. "vae" and "beta_vae" share a
class: beta is a config field.
"""
from __future__ import annotations

from .base import (ConfigError, Variant, LatentModel, LossOutput, ModelConfig, Posterior,
                   TERM_NAMES, kl_normal, recon_bce, reparameterize)
from .branched import BranchedVAE
from .cvae import CVAE
from .fixed_output import FixedOutputVAE
from .kmeans_prior import KMeansPriorVAE
from .lambda_hot import LambdaHotVAE
from .vae import VAE


_LH = "Wang, Blair, Belkhale: Encouraging Categorical Meaning in the Latent Space of a VAE"
_BV = "Yevick: Branched Variational Autoencoder Classifiers (arXiv 2401.02526)"

VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("vae", VAE, "VAE", "Gaussian prior N(0, I); recon BCE + KL.",
            "Kingma & Welling 2014 (baseline in " + _LH + ")"),
    Variant("beta_vae", VAE, "beta-VAE", "KL weighted by beta = 5: smoother, blurrier.",
            "Higgins et al. 2017 (baseline in " + _LH + ", sec. 3.1)", {"beta": 5.0}),
    Variant("cvae", CVAE, "Conditional VAE", "Label joins the encoder input and z.",
            "Sohn et al. 2015 (baseline in " + _LH + ", sec. 3.2)", supervised=True),
    Variant("lambda_hot", LambdaHotVAE, "Lambda-hot VAE",
            "Prior N(lambda*onehot(y), I) in the first C dims: one cluster per class.",
            _LH + ", sec. 4", supervised=True),
    Variant("kmeans", KMeansPriorVAE, "K-means prior VAE",
            "Prior N(nearest k-means centre, I), centres refitted every epoch.", _LH + ", sec. 4"),
    Variant("branched", BranchedVAE, "Branched VAE",
            "A classifier branch on z adds lambda * cross-entropy.", _BV, supervised=True),
    Variant("fixed_output", FixedOutputVAE, "Fixed-output VAE",
            "Decoder target is a fixed image per class, not the input.", _BV, supervised=True),
]}

try:  # TreeVAE registers itself when its module is present.
    from .tree_vae import TREEVAE_VARIANT
    VARIANTS[TREEVAE_VARIANT.name] = TREEVAE_VARIANT
except ImportError as exc:  # pragma: no cover - only while tree_vae.py is absent
    if "tree_vae" not in str(exc):
        raise


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError("variant", name, "one of " + ", ".join(VARIANTS))
    return VARIANTS[name]


def build(name: str, **config) -> LatentModel:
    """A fresh model of variant ``name`` with its defaults overridden by ``config``."""
    variant = get_variant(name)
    model = variant.cls(variant.config(**config))
    model.variant_name = name
    return model


MODELS = {name: v.cls for name, v in VARIANTS.items()}

__all__ = ["VARIANTS", "MODELS", "Variant", "build", "get_variant", "LatentModel",
           "ModelConfig", "ConfigError", "LossOutput", "Posterior", "TERM_NAMES",
           "kl_normal", "recon_bce", "reparameterize"]
