"""Datasets by name, as tensors resident on one device.

``load_dataset(name)`` returns a :class:`Dataset`: float images in [0, 1] of shape
(N, 1, H, W), int64 labels, class names. Names:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; no download), split 80/20
  stratified with a fixed seed. The embedded default.
- ``mnist``, ``fashion_mnist``: torchvision's datasets from the dataset root
  (``download=True``: fetched when online, found in the root when offline).
- ``rotated_mnist``: MNIST with every image rotated by a seeded random angle, uniform
  in [-180, 180) degrees, as in the branched-VAE paper's rotated-digit experiments.

The dataset root is ``data_dir`` if given, else ``$LATENTVIZ_DATA``, else a user cache
folder (``~/.cache/latentviz/data``).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

# What torchvision reads, per dataset folder (train/test images and labels).
RAW_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
EXPECTED_SIZES = {"train": 60000, "test": 10000}
# Byte sizes of the extracted IDX files (header + one byte per pixel or label).
IDX_BYTES = {"train-images-idx3-ubyte": 16 + 60000 * 784, "train-labels-idx1-ubyte": 8 + 60000,
             "t10k-images-idx3-ubyte": 16 + 10000 * 784, "t10k-labels-idx1-ubyte": 8 + 10000}


class DatasetError(RuntimeError):
    """A dataset that cannot be found or read; the message says where and what."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: Tensor  # (N,) int64
    x_test: Tensor   # (M, C, H, W)
    y_test: Tensor   # (M,)
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device) -> "Dataset":
        device = torch.device(device)
        if device == self.device:
            return self
        return replace(self, **{k: getattr(self, k).to(device) for k in
                                ("x_train", "y_train", "x_test", "y_test")})

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Dataset":
        """A class-balanced-in-expectation random slice (for tests and quick demos)."""
        g = torch.Generator().manual_seed(seed)

        def take(x, y, n):
            if n is None or n >= len(y):
                return x, y
            idx = torch.randperm(len(y), generator=g)[:n].to(y.device)
            return x[idx], y[idx]

        xtr, ytr = take(self.x_train, self.y_train, n_train)
        xte, yte = take(self.x_test, self.y_test, n_test)
        return replace(self, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        if which not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {which!r}")
        return (self.x_train, self.y_train) if which == "train" else (self.x_test, self.y_test)


def default_data_dir() -> Path:
    env = os.environ.get("LATENTVIZ_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentviz" / "data"


DATASETS = ("digits", "mnist", "fashion_mnist", "rotated_mnist")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, device="cpu",
                 download: bool = True) -> Dataset:
    """Load dataset ``name`` (see module docstring) onto ``device``."""
    from .models.base import ConfigError

    if name not in DATASETS:
        raise ConfigError("dataset", name, "one of " + ", ".join(DATASETS))
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    return _load_cached(name, str(root.resolve()), download).to(device)


@lru_cache(maxsize=4)
def _load_cached(name: str, root: str, download: bool) -> Dataset:
    if name == "digits":
        return _digits()
    if name == "rotated_mnist":
        return rotate_dataset(_torchvision(Path(root), "mnist", download), seed=0)
    return _torchvision(Path(root), name, download)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8), 0..16 -> [0, 1]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0,
                                          stratify=d.target)
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    return Dataset("digits", t(xtr, torch.float32), t(ytr, torch.long),
                   t(xte, torch.float32), t(yte, torch.long), MNIST_CLASSES)


def _torchvision(root: Path, name: str, download: bool) -> Dataset:
    from torchvision import datasets

    cls, folder, classes = {"mnist": (datasets.MNIST, "MNIST", MNIST_CLASSES),
                            "fashion_mnist": (datasets.FashionMNIST, "FashionMNIST",
                                              FASHION_CLASSES)}[name]
    raw = root / folder / "raw"
    if not download and not all((raw / f).exists() or (raw / f[:-3]).exists() for f in RAW_FILES):
        raise DatasetError(_missing_message(name, root / folder, FileNotFoundError("download=False")))
    for fname, nbytes in IDX_BYTES.items():
        f = raw / fname
        if f.exists() and f.stat().st_size != nbytes:
            raise DatasetError(f"The {name} dataset file {f} is corrupt or partial: "
                               f"{f.stat().st_size} bytes, expected {nbytes}. Delete it; the "
                               f"original {fname}.gz in {raw} is extracted again on next load.")
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            # download=True also covers the offline case: torchvision finds the .gz files,
            # checks their md5 and extracts them without touching the network.
            ds = cls(str(root), train=train, download=True)
        except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
            raise DatasetError(_missing_message(name, root / folder, exc)) from exc
        x, y = ds.data, ds.targets
        _check_arrays(name, split, root / folder, x, y, len(classes))
        splits[split] = (x.unsqueeze(1).float().div_(255.0), y.long())
    return Dataset(name, *splits["train"], *splits["test"], classes)


def _missing_message(name: str, folder: Path, exc: Exception) -> str:
    raw = folder / "raw"
    have = sorted(p.name for p in raw.glob("*")) if raw.is_dir() else []
    need = ", ".join(RAW_FILES)
    return (f"The {name} dataset could not be loaded from {folder} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}). Offline, put the four original files ({need}) in "
            f"{raw} (found there: {', '.join(have) or 'nothing'}), or point --data-dir / "
            f"LATENTVIZ_DATA at a folder that holds {folder.name}/raw/.")


def _check_arrays(name, split, folder, x, y, n_classes):
    """A partial or corrupt file must fail loudly, never give a silently wrong dataset."""
    which = "train" if split == "train" else "t10k"
    n = EXPECTED_SIZES[split]
    problems = []
    if tuple(x.shape) != (n, 28, 28):
        problems.append(f"{which}-images has shape {tuple(x.shape)}, expected ({n}, 28, 28)")
    if tuple(y.shape) != (n,):
        problems.append(f"{which}-labels has shape {tuple(y.shape)}, expected ({n},)")
    elif len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        problems.append(f"{which}-labels holds labels outside 0..{n_classes - 1}")
    if problems:
        raise DatasetError(f"The {name} dataset in {folder} looks corrupt or partial: "
                           + "; ".join(problems) + f". Delete {folder} and restore the "
                           "original files (torchvision checks their md5 when it extracts).")


def rotate_images(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image of x (B, C, H, W) by its own angle (B,), in one batched op."""
    theta = degrees.to(x.device, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate_dataset(data: Dataset, seed: int = 0, max_degrees: float = 180.0) -> Dataset:
    """Every image rotated by a seeded uniform angle in [-max_degrees, max_degrees)."""
    g = torch.Generator().manual_seed(seed)

    def rot(x):
        angles = (torch.rand(len(x), generator=g) * 2 - 1) * max_degrees
        return torch.cat([rotate_images(c, a) for c, a in
                          zip(x.split(8192), angles.split(8192))]).clamp_(0.0, 1.0)

    return replace(data, name="rotated_mnist", x_train=rot(data.x_train), x_test=rot(data.x_test))


def prepare_image(img: np.ndarray, image_shape: tuple[int, int, int], invert: bool | None = None) -> Tensor:
    """A user's greyscale image (H, W) in [0, 255] -> (1, C, H', W') like the dataset.

    Dark-on-light drawings are inverted (the datasets are light-on-dark) when ``invert``
    is None and the border is brighter than the centre.
    """
    a = np.asarray(img, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected a greyscale image (H, W), got shape {a.shape}")
    a = a / 255.0 if a.max() > 1.0 else a
    if invert is None:
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean()
        invert = border > 0.5
    if invert:
        a = 1.0 - a
    t = torch.as_tensor(a)[None, None]
    _, h, w = image_shape[0], image_shape[1], image_shape[2]
    t = F.interpolate(t, size=(h, w), mode="area")
    return t.clamp(0, 1).expand(1, image_shape[0], h, w).contiguous()
