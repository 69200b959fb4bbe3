"""TreeVAE's configuration: the growth schedules (``SCHEDULES``) and ``TreeVAEConfig``
(Manduchi et al. 2023, sec. 2.5 and appendix; the reference's ``configs/mnist.yml``)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import ConfigError, ModelConfig, param

log = logging.getLogger(__name__)


# What a schedule sets. "reference" is configs/mnist.yml of the reference code. "fast"
# keeps its shape (a weak KL while growing: alpha reaches 0.15 at the end of the first
# stage, as there; the full ELBO in the second half of the final fine-tune) in a fraction of
# the epochs (20 initial and 10 per subtree instead of 150, 5 final instead of 200; the
# learning rate / 10 every 8 epochs, so twice in the first stage, where the reference drops
# it once after 100 of 150), so that a 10-leaf MNIST tree grows in about 7 minutes on one
# CPU core (20,000 images). Like the reference it decodes every sample at every leaf and
# starts a split's new decoders from random weights: over two seeds that gave the best mean
# DP, LP, ACC and NMI of the four combinations with the decoding cut-off (1e-3) and
# warm-started decoders, which the fast schedule used before (docs/TREEVAE.md, issue 16).
# "tiny" is a smoke test. The field defaults are the fast schedule's.
SCHEDULES: dict[str, dict[str, Any]] = {
    "reference": {"epochs_initial": 150, "epochs_subtree": 150, "epochs_retrain": 80,
                  "retrain_every": 3, "epochs_final": 200, "kl_anneal_epochs": 1000,
                  "kl_anneal_epochs_final": 100, "lr_decay_every": 100,
                  "decode_min_prob": 0.0, "warm_start_decoders": False, "eval_every": 10},
    "fast": {"epochs_initial": 20, "epochs_subtree": 10, "epochs_retrain": 1,
             "retrain_every": 3, "epochs_final": 5, "kl_anneal_epochs": 133,
             "kl_anneal_epochs_final": 3, "lr_decay_every": 8,
             "decode_min_prob": 0.0, "warm_start_decoders": False, "eval_every": 5},
    "tiny": {"epochs_initial": 2, "epochs_subtree": 1, "epochs_retrain": 1,
             "retrain_every": 3, "epochs_final": 2, "kl_anneal_epochs": 2,
             "kl_anneal_epochs_final": 1, "lr_decay_every": 100,
             "decode_min_prob": 1e-3, "warm_start_decoders": True, "eval_every": 1},
}
_FAST = SCHEDULES["fast"]
# Training settings of the reference run (pass as the TrainConfig): batch 256, Adam 1e-3,
# weight decay 1e-5, seed 42.
REFERENCE_TRAIN = {"batch_size": 256, "lr": 1e-3, "weight_decay": 1e-5, "seed": 42}


@dataclass(frozen=True)
class TreeVAEConfig(ModelConfig):
    """TreeVAE's hyperparameters. ``schedule`` fills the fields it lists in SCHEDULES; a
    value given explicitly wins unless it equals the field default (the fast schedule's).
    ``latent_dim`` is derived, always: (max_depth + 1) * node_latent_dim, the width of
    embed(x); another value given is ignored with a warning."""

    latent_dim: int = param(48, "width D of embed(x): (max_depth + 1) * node_latent_dim "
                            "(derived: a value given is ignored)", min=1, max=4096)
    backbone: str = param("auto", "bottom-up encoder and leaf decoders: conv = the reference's "
                          "small CNNs (28x28 only), mlp = MLPs (any size), auto = conv for "
                          "28x28 else mlp", choices=("auto", "conv", "mlp"))
    hidden: int = param(128, "width of the bottom-up MLPs, transformations and routers",
                        min=8, max=4096, paper="128 (sec. 3, appendix; mlp_layers)")
    conv_channels: tuple = param((8, 16, 32), "channels of the three stride-2 3x3 convolutions "
                                 "of the conv encoder (mirrored by the decoders)",
                                 paper="1->8->16->32 (EncoderSmallCnn)")
    node_latent_dim: int = param(8, "size of each node's latent z_i", min=1, max=256,
                                 paper="8 for MNIST/Fashion-MNIST")
    max_depth: int = param(5, "deepest node level (root = 0): also the number of bottom-up "
                           "MLP blocks", min=1, max=12, paper="5 (6 levels; len(mlp_layers) - 1)")
    max_leaves: int = param(10, "stop growing at this many effective leaves", min=2, max=128,
                            paper="10 (num_clusters_tree)")
    min_samples_split: int = param(256, "a leaf with fewer selected training samples is not "
                                   "split", min=2, paper="the batch size, 256")
    subset_prob: float = param(0.5, "a leaf's subtree trains on the samples with P(leaf|x) >= "
                               "min(1 / n_effective_leaves, this)", min=0.0, max=1.0,
                               min_exclusive=True, paper="0.5")
    effective_leaf_fraction: float = param(0.01, "a leaf counts towards max_leaves when its "
                                           "summed P(leaf|x) is at least this share of the "
                                           "training set", min=0.0, max=1.0, paper="0.01")
    prune: bool = param(True, "remove small leaves before the final fine-tune")
    prune_fraction: float = param(0.01, "prune leaves holding less than this share of the "
                                  "training samples (hard assignment)", min=0.0, max=1.0,
                                  paper="0.01")
    decode_min_prob: float = param(
        _FAST["decode_min_prob"], "while growing, skip decoding a sample at a leaf it "
        "reaches with P(leaf|x) below this (0 = decode every sample at every leaf; the final "
        "fine-tune always decodes every leaf)",
        min=0.0, max=0.5, paper="0")
    warm_start_decoders: bool = param(
        _FAST["warm_start_decoders"], "start a split's two new decoders from a copy of the "
        "split leaf's decoder (the paper starts them from random weights)", paper="False")
    max_splits: int = param(150, "safety cap on growth iterations", min=0, max=10000,
                            paper="150 (growing_iterations)")
    schedule: str = param("fast", "preset of the epoch counts, annealing and the two "
                          "approximations: reference = the paper's (150 initial, 150 per "
                          "subtree, 80 retrain every 3 splits, 200 final, exact), fast = "
                          "CPU-sized (about 1/25 of the epochs), tiny = smoke test",
                          choices=tuple(SCHEDULES))
    epochs_initial: int = param(_FAST["epochs_initial"], "epochs of the initial root + two "
                                "leaves", min=0, max=10000, paper="150")
    epochs_subtree: int = param(_FAST["epochs_subtree"], "epochs of each new subtree (the "
                                "rest frozen)", min=0, max=10000, paper="150")
    epochs_retrain: int = param(_FAST["epochs_retrain"], "epochs of the intermediate "
                                "full-tree retrains", min=0, max=10000, paper="80")
    retrain_every: int = param(_FAST["retrain_every"], "retrain the whole tree after every "
                               "this many splits", min=1, max=1000, paper="3")
    epochs_final: int = param(_FAST["epochs_final"], "epochs of the final full-tree "
                              "fine-tune", min=0, max=10000, paper="200")
    kl_start: float = param(0.0, "KL weight alpha at the start of each stage", min=0.0, max=1.0,
                            paper="0.0")
    kl_anneal_epochs: int = param(_FAST["kl_anneal_epochs"], "growth stages: alpha = min(1, "
                                  "kl_start + (epoch + 1) / this); 0 = no annealing", min=0,
                                  max=100000, paper="1000 (decay_kl 0.001)")
    kl_anneal_epochs_final: int = param(_FAST["kl_anneal_epochs_final"], "the same for the "
                                        "final fine-tune", min=0, max=100000,
                                        paper="100 (decay 0.01)")
    lr_decay_every: int = param(_FAST["lr_decay_every"], "multiply the learning rate by "
                                "lr_decay every this many epochs of a stage", min=1,
                                max=100000, paper="100")
    lr_decay: float = param(0.1, "StepLR factor", min=0.0, max=1.0, min_exclusive=True,
                            paper="0.1")
    eval_every: int = param(_FAST["eval_every"], "evaluate the test set every this many "
                            "epochs of a stage and after its last (a subtree stage on the "
                            "test images it would train on)", min=1, max=10000, paper="1")

    #: What tests/conftest.py's tiny_model uses: a tree of up to 4 leaves in seconds on digits.
    TINY: ClassVar[dict] = {"schedule": "tiny", "hidden": 32, "node_latent_dim": 4,
                            "max_depth": 3, "latent_dim": 16, "max_leaves": 4,
                            "min_samples_split": 64}

    def __post_init__(self):
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        preset = SCHEDULES.get(self.schedule, {})
        for name, value in preset.items():
            if getattr(self, name) == defaults[name]:
                object.__setattr__(self, name, value)
        if isinstance(self.conv_channels, str):  # from a CLI flag: "8,16,32"
            try:
                object.__setattr__(self, "conv_channels",
                                   tuple(int(s) for s in self.conv_channels.split(",")))
            except ValueError:
                raise ConfigError("conv_channels", self.conv_channels, "three whole numbers, "
                                  "e.g. 8,16,32") from None
        derived = int(self.max_depth) * int(self.node_latent_dim) + int(self.node_latent_dim)
        if self.latent_dim not in (derived, defaults["latent_dim"]):
            log.warning("TreeVAE: latent_dim = %s is ignored; it is (max_depth + 1) * "
                        "node_latent_dim = %d", self.latent_dim, derived)
        object.__setattr__(self, "latent_dim", derived)
        super().__post_init__()

    def validate(self):
        super().validate()
        ch = tuple(self.conv_channels)
        if len(ch) != 3 or not all(isinstance(c, int) and 1 <= c <= 1024 for c in ch):
            raise ConfigError("conv_channels", ch, "three whole numbers in 1..1024")
        if self.backbone == "conv" and tuple(self.image_shape[1:]) != (28, 28):
            raise ConfigError("backbone", "conv", "28x28 images (the reference CNNs); got "
                              f"{self.image_shape[1]}x{self.image_shape[2]}: use auto or mlp")

    @property
    def resolved_backbone(self) -> str:
        if self.backbone != "auto":
            return self.backbone
        return "conv" if tuple(self.image_shape[1:]) == (28, 28) else "mlp"
