"""Where the app finds checkpoints, and the session-state keys it uses.

Two folders hold checkpoints: the shipped ones (``$LATENTVIZ_CHECKPOINTS``, default
``checkpoints/`` beside app.py) and the user's own runs (``$LATENTVIZ_RUNS``, default
``runs/``), where the Train page saves. Unfinished runs (``*.partial.safetensors``)
are not offered for exploring; the Train page offers to resume those in the runs folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import MetaView

REPO = Path(__file__).resolve().parents[2]

# Session-state keys, one place so pages cannot collide.
# The current checkpoint's path. No widget owns this key: Streamlit deletes a widget's key
# when a run does not draw that widget (a page change does that), so the choice lives here
# and the sidebar's picker (key CHECKPOINT_WIDGET) is set from it on every page.
CHECKPOINT = "lv_checkpoint"
CHECKPOINT_WIDGET = "lv_checkpoint.widget"
SELECT_NEXT = "lv_select_next"      # path to select on the next run (a fresh checkpoint)
JOB = "lv_training_job"             # this session's TrainingJob


def shipped_dir() -> Path:
    return Path(os.environ.get("LATENTVIZ_CHECKPOINTS") or REPO / "checkpoints").expanduser()


def runs_dir() -> Path:
    return Path(os.environ.get("LATENTVIZ_RUNS") or REPO / "runs").expanduser()


COLLAPSED_KL = 0.5   # nats per image: less than one bit of information about x in z


@dataclass(frozen=True)
class Entry(MetaView):
    """A checkpoint file as the app lists it: where it is and its header metadata."""

    path: str
    mtime: float
    source: str                 # "shipped" or "yours"
    meta: dict
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} · {self.variant} · {self.dataset}" + \
            (" · collapsed" if self.collapsed else "")

    @property
    def collapsed(self) -> str | None:
        """Why the model counts as posterior-collapsed (its decoder ignores z), else None:
        no active unit (Burda et al. 2016), or a test KL under COLLAPSED_KL nats."""
        m = self.metrics
        au, kl = m.get("active_units"), m.get("test_kl")
        if isinstance(au, (int, float)) and au == 0:
            return "no active latent unit; samples do not depend on z"
        if isinstance(kl, (int, float)) and kl < COLLAPSED_KL:
            return f"KL {kl:.3f} nats per image; samples do not depend on z"
        return None


def checkpoint_files() -> list[tuple[str, float, str]]:
    """(path, mtime, source) of every finished checkpoint in both folders, the user's first."""
    out = []
    for folder, source in ((runs_dir(), "yours"), (shipped_dir(), "shipped")):  # yours first
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*.safetensors")):
            if p.name.endswith(".partial.safetensors"):
                continue
            if (mtime := entry_mtime(p)) is not None:
                out.append((str(p), mtime, source))
    return out


def entry_mtime(p: Path) -> float | None:
    """A listed file's mtime, None if it is gone. An entry that cannot be stat'ed (a
    symlink loop, a dangling link, no permission) gets its link's own mtime, or 0: it
    stays in the listing, where reading it names what is wrong with it."""
    try:
        return os.stat(p).st_mtime
    except OSError:
        try:
            return os.lstat(p).st_mtime
        except FileNotFoundError:  # removed between listing and stat
            return None
        except OSError:
            return 0.0


def interrupted_runs(busy: set[str] = frozenset()) -> list[Path]:
    """The unfinished runs (``*.partial.safetensors``) in the runs folder, newest first,
    leaving out those whose checkpoint (absolute path) is in ``busy``: still training."""
    from ..runs import final_path

    folder = runs_dir()
    if not folder.is_dir():
        return []
    found = []
    for p in folder.rglob("*.partial.safetensors"):
        if os.path.abspath(final_path(p)) in busy:
            continue
        if (mtime := entry_mtime(p)) is not None:  # None: finished since the listing
            found.append((mtime, p))
    return [p for _, p in sorted(found, reverse=True)]
