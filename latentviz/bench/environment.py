"""The machine a benchmark ran on (:func:`environment`), the repository, and the data
slices the sections share."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .timing import _load


REPO = Path(__file__).resolve().parents[2]


def environment(args) -> dict:
    from importlib import metadata

    from .. import openmp
    from ..train import describe_device, pick_device

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    device = pick_device("auto")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m latentviz " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(
            ("__main__.py", "latentviz")) else " ".join(sys.argv),
        "device": describe_device(device), "cpu": cpu, "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins)") + (
            " (latentviz's default)" if "OMP_WAIT_POLICY" in openmp.APPLIED else ""),
        "load_average": _load(),
        "python": platform.python_version(), "commit": commit,
        "versions": {p: version(p) for p in ("torch", "torchvision", "numpy", "scikit-learn",
                                             "umap-learn", "pynndescent", "numba", "openTSNE",
                                             "streamlit", "playwright")},
        "quick": bool(args.quick),
    }


def _load_mnist(data_dir):
    """(latentviz Dataset, torchvision train set with ToTensor) or raise with the reason."""
    from torchvision import datasets, transforms

    from ..data import load_dataset

    data = load_dataset("mnist", data_dir, download=False)
    root = Path(data_dir).expanduser() if data_dir else None
    if root is None:
        from ..data import default_data_dir
        root = default_data_dir()
    tv = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    return data, tv


def _slice(data, n_train: int, n_test: int):
    """The first n_train / n_test images (the reference reads the same ones)."""
    return dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                               x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])
