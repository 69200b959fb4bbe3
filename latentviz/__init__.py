"""latentviz: train, load and look inside the latent space of VAE variants.

The library runs without Streamlit or Plotly; ``latentviz.figures`` and ``latentviz.ui``
are the only modules that import them.
"""
__version__ = "0.1.0"

# Before torch loads its OpenMP runtime: passive waiting and the usable cores, unless the
# user chose (a shared machine otherwise slows down tenfold; see latentviz/openmp.py).
from . import openmp as _openmp  # noqa: E402

_openmp.apply_defaults()
# The OpenMP workers start now, flushing subnormal floats to zero (a trained TreeVAE ran at
# half speed on subnormal gradients); this thread keeps IEEE arithmetic outside training.
_openmp.flush_subnormals()

from .checkpoints import CheckpointError, list_checkpoints, load, save  # noqa: E402
from .data import Dataset, DatasetError, load_dataset  # noqa: E402
from .models import MODELS, VARIANTS, ConfigError, build  # noqa: E402
from .train import History, TrainConfig, TrainingDiverged, fit, train_model  # noqa: E402
from . import metrics  # noqa: E402,F401

__all__ = ["__version__", "Dataset", "DatasetError", "load_dataset", "MODELS", "VARIANTS",
           "ConfigError", "build", "fit", "TrainConfig", "History", "TrainingDiverged",
           "save", "load", "list_checkpoints", "CheckpointError", "train_model"]
