"""Where the report writes, and what it trains and draws: :class:`Settings` (full or quick)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


RESULTS_FILE = "RESULTS.md"


EXTRA_RUNS_FILE = "results/extra_runs.json"


FIGURES_DIR = "figures"


DEFAULT_RUNS_DIR = Path("runs") / "report"


@dataclass(frozen=True)
class Settings:
    """What the report trains and draws: the full sizes, or ``quick`` ones for the tests.

    ``source`` maps each dataset the papers use to the dataset our numbers come from (the
    identity, except in quick mode, where every row is filled from the 8x8 digits).
    """

    quick: bool = False
    source: dict = field(default_factory=lambda: {
        "mnist": "mnist", "fashion_mnist": "fashion_mnist", "rotated_mnist": "rotated_mnist"})
    sweep_dataset: str = "mnist"
    sweep_epochs: int = 5
    sweep_batch_size: int = 128
    sweep_model: dict = field(default_factory=dict)
    sweep_n_train: int | None = 20000  # a seeded slice of the training set (CPU budget)
    lambdas: tuple = (0.0, 1.0, 5.0, 10.0, 100.0)
    seeds: tuple = (0, 1, 2)
    seed_lambda: float = 5.0          # lambda-hot's lambda in the seed runs (the paper's)
    # Latent classifiers of the sweep and seed runs: kNN only, as the others cost several
    # times the 5 epochs of training on a shared CPU (the shipped checkpoints have all four).
    classifiers: tuple = ("knn",)
    tsne_points: int = 2500
    agg_points: int = 10000           # test points for the agglomerative baseline
    n_samples: int = 8                # images per row in the sample figures
    random_state: int = 0

    @classmethod
    def full(cls) -> "Settings":
        return cls()

    @classmethod
    def quick_mode(cls) -> "Settings":
        return cls(quick=True, source={"mnist": "digits", "fashion_mnist": "digits",
                                       "rotated_mnist": "digits"},
                   sweep_dataset="digits", sweep_epochs=2, sweep_batch_size=64,
                   sweep_model={"latent_dim": 12, "hidden": 64}, sweep_n_train=None,
                   lambdas=(0.0, 5.0),
                   seeds=(0, 1), tsne_points=300, agg_points=360, n_samples=6)
