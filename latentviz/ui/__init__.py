"""The only library code that imports Streamlit: cached loaders (``cache``), session-state
keys and checkpoint folders (``state``), the background training manager (``training``),
shared widgets (``widgets``) and upload checks (``upload``, Streamlit-free)."""
from . import cache, state, training, upload, widgets  # noqa: F401
from .cache import dataset, encoded_for, entries, model, usable  # noqa: F401
from .widgets import (colour_choices, colour_labels, config_inputs, coordinates_csv,  # noqa: F401
                      current, images, load, projection, projection_controls, require_model,
                      show_training, sidebar)
