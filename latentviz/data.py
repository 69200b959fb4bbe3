"""Datasets by name, as tensors resident on one device.

``load_dataset(name)`` returns a :class:`Dataset`: float images in [0, 1] of shape
(N, 1, H, W), int64 labels, class names. Names:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; no download), split 80/20
  stratified with a fixed seed. The embedded default.
- ``mnist``, ``fashion_mnist``: torchvision's datasets from the dataset root
  (``download=True``: fetched when online, found in the root when offline).
- ``rotated_mnist``: MNIST with every image rotated by a seeded random angle, uniform
  in [-180, 180) degrees, as in the branched-VAE paper's rotated-digit experiments.

Or the path of your own images (:func:`load_path_dataset`): a folder in torchvision's
``ImageFolder`` layout (one subfolder per class, optionally under ``train/`` and ``test/``),
or an ``.npz`` file with ``x``, ``y`` and optionally ``class_names``; grey or RGB, (C, H, W)
as found. Such a dataset carries its identity (``Dataset.source``: path, images per class,
content hash), which a checkpoint keeps so that :func:`dataset_for` reopens it and says
when it has moved or changed.

The dataset root is ``data_dir`` if given, else ``$LATENTVIZ_DATA``, else a user cache
folder (``~/.cache/latentviz/data``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
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
    #: your own images only: where they are and what they were (see ``load_path_dataset``)
    source: dict | None = field(default=None, compare=False)

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
#: (image shape, number of classes) of each dataset, known without loading it: a
#: checkpoint's config must fit the dataset it names.
SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
          "fashion_mnist": ((1, 28, 28), 10), "rotated_mnist": ((1, 28, 28), 10)}


def is_path(name: str) -> bool:
    """Whether a dataset name is the path of your own images rather than a named dataset."""
    name = str(name)
    return name not in DATASETS and ("/" in name or os.sep in name or name.endswith(".npz")
                                     or Path(name).expanduser().exists())


def dataset_label(name: str) -> str:
    """A short name for file names and captions: the name, or a path's last part."""
    return Path(name).stem if is_path(name) else str(name)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, device="cpu",
                 download: bool = True, *, image_size: int | None = None) -> Dataset:
    """Load dataset ``name`` (see module docstring) onto ``device``; a path is read by
    :func:`load_path_dataset` (``image_size`` applies to those only)."""
    from .models.base import ConfigError

    if is_path(name):
        return load_path_dataset(name, image_size).to(device)
    if name not in DATASETS:
        raise ConfigError("dataset", name, "one of " + ", ".join(DATASETS)
                          + ", or the path of an image folder or .npz file")
    if image_size is not None:
        raise ConfigError("image_size", image_size, "only for your own images (a dataset path)")
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


# ----------------------------------------------------------------------------- your own images

MAX_IMAGE_FILE_BYTES = 32 * 2 ** 20   # one image file; far above any image these models take
MAX_IMAGE_PIXELS = 4096 * 4096        # one image, checked from its header before decoding
MAX_DATA_BYTES = 4 * 2 ** 30          # an .npz file, an array in it, the images held in memory
MAX_SIDE = 64                         # default: larger images are resized to MAX_SIDE x MAX_SIDE
TEST_FRACTION = 0.2                   # the seeded stratified split when none is given
SPLIT_SEED = 0
GREY_MODES = ("1", "L", "LA")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")


def load_path_dataset(path: str | os.PathLike, image_size: int | None = None) -> Dataset:
    """Your own images as a :class:`Dataset` on the CPU (``.to(device)`` moves it).

    ``path`` is a folder in torchvision's ``ImageFolder`` layout (``class/img.png``; with
    ``train/`` and ``test/`` subfolders those are the split) or an ``.npz`` file with ``x``
    (N, H, W) or (N, H, W, C) as uint8 or float in [0, 1], ``y`` (N,) integer labels in
    0..K-1 and optionally ``class_names`` (K,). Images are grey (C = 1) or RGB (C = 3) and
    all of one size, resized to ``image_size`` x ``image_size`` if given, else kept when
    both sides are at most 64 and resized to 64 x 64 otherwise. Without a given split, a
    stratified 80/20 split with seed 0. Raises :class:`DatasetError` naming the file for
    anything it cannot use.
    """
    p = Path(path).expanduser().resolve()
    if image_size is not None and not (isinstance(image_size, int) and 4 <= image_size <= 512):
        from .models.base import ConfigError
        raise ConfigError("image_size", image_size, "a whole number from 4 to 512")
    if p.is_dir():
        kind, (parts, classes) = "folder", _read_folder(p, image_size)
    elif p.is_file() and p.suffix == ".npz":
        kind, (parts, classes) = "npz", _read_npz(p, image_size)
    elif p.exists():
        raise DatasetError(f"{p}: neither a folder of class subfolders nor an .npz file")
    else:
        raise DatasetError(f"{p}: no such image folder or .npz file")
    if len(parts) == 1:  # no split given
        parts = _stratified_split(p, *parts["all"], classes)
        split = f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}, seed {SPLIT_SEED}"
    else:
        split = "train/ and test/ folders"
    digest = hashlib.sha256(json.dumps(list(classes)).encode())
    counts = {}
    for name in ("train", "test"):
        x, y = parts[name]
        digest.update(f"{name}{x.dtype}{x.shape}".encode())
        digest.update(np.ascontiguousarray(x).data)
        digest.update(np.ascontiguousarray(y, dtype=np.int64).data)
        counts[name] = np.bincount(y, minlength=len(classes)).tolist()
    tensors = [t for name in ("train", "test") for t in _as_tensors(*parts[name])]
    c, h, w = tensors[0].shape[1:]
    source = {"path": str(p), "kind": kind, "image_size": image_size, "image_shape": [c, h, w],
              "split": split, "images_per_class": counts, "sha256": digest.hexdigest()}
    return Dataset(str(p), *tensors, tuple(classes), source)


def dataset_for(meta: dict, data_dir: str | os.PathLike | None = None, device="cpu", *,
                path: str | os.PathLike | None = None) -> Dataset:
    """The dataset a checkpoint (its metadata ``meta``) was trained on.

    Your own images are reopened from the path the checkpoint recorded (or ``path``, their
    new place) and must be what they were then: same images per class, same content hash;
    otherwise a :class:`DatasetError` says what moved or changed.
    """
    src = meta.get("dataset_source")
    if not src:
        return load_dataset(meta.get("dataset", "?"), data_dir, device=device)
    where = Path(path or src["path"]).expanduser()
    if not where.exists():
        raise DatasetError(f"This checkpoint was trained on {src['path']}, which is no longer "
                           "there (moved, renamed or deleted). Put it back, or give its new "
                           "place (eval --dataset PATH); it is checked to be the same images.")
    data = load_path_dataset(where, src.get("image_size"))
    if data.source["sha256"] != src.get("sha256"):
        then, now = src.get("images_per_class"), data.source["images_per_class"]
        what = (f"images per class then {then}, now {now}" if then != now else
                "the same number of images per class, but different images or labels")
        raise DatasetError(f"{data.name} has changed since this checkpoint was trained on it "
                           f"({what}); its metrics and maps would not describe these images. "
                           "Restore the original files, or train a new model on them.")
    return data.to(device)


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    """(N, H, W, C) uint8 or float in [0, 1] -> (N, C, H, W) float32, and int64 labels."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    return t.contiguous(), torch.from_numpy(np.asarray(y, dtype=np.int64))


def _target_size(where, h: int, w: int, image_size: int | None) -> tuple[int, int]:
    if image_size is not None:
        return image_size, image_size
    return (h, w) if max(h, w) <= MAX_SIDE else (MAX_SIDE, MAX_SIDE)


def _check_bytes(where, n: int, h: int, w: int, c: int) -> None:
    nbytes = n * h * w * c * 4  # held as float32
    if nbytes > MAX_DATA_BYTES:
        raise DatasetError(f"{where}: {n} images of {c}x{h}x{w} would take {nbytes / 2**30:.1f} "
                           f"GiB as float32, more than the {MAX_DATA_BYTES / 2**30:.0f} GiB "
                           "allowed; choose a smaller image size")


def _check_classes(where, y: np.ndarray, classes) -> None:
    have = np.flatnonzero(np.bincount(y, minlength=len(classes)))
    if len(have) < 2:
        only = classes[have[0]] if len(have) else "none"
        raise DatasetError(f"{where}: all its images are of one class ({only}); a dataset "
                           "needs at least two classes")


def _stratified_split(where, x, y, classes):
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=len(classes))
    few = [f"{classes[k]} ({counts[k]})" for k in np.flatnonzero((counts > 0) & (counts < 2))]
    if few:
        raise DatasetError(f"{where}: too few images to split into train and test in class "
                           f"{', '.join(few)}; every class needs at least 2 images (or give "
                           "the split as train/ and test/ folders)")
    idx = np.arange(len(y))
    try:
        tr, te = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                  stratify=y)
    except ValueError as exc:  # fewer test images than classes
        raise DatasetError(f"{where}: {len(y)} images are too few to split into train and "
                           f"test with every class in both ({exc}); add images or give the "
                           "split as train/ and test/ folders") from None
    tr, te = np.sort(tr), np.sort(te)
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}


# -- image folders

def _read_folder(root: Path, image_size: int | None):
    subdirs = {d.name for d in root.iterdir() if d.is_dir()}
    if {"train", "test"} <= subdirs:
        train = _image_folder(root / "train")
        test = _image_folder(root / "test")
        if train.classes != test.classes:
            raise DatasetError(f"{root}: train/ and test/ hold different class folders "
                               f"({', '.join(train.classes)} against {', '.join(test.classes)})")
        folders = {"train": train, "test": test}
    else:
        folders = {"all": _image_folder(root)}
    samples = [s for f in folders.values() for s in f.samples]
    first = samples[0][0]
    c, h, w = _probe(first)
    size = _target_size(root, h, w, image_size)
    _check_bytes(root, len(samples), *size, c)
    x = np.empty((len(samples), size[0], size[1], c), np.uint8)

    def read(i):
        x[i] = _read_image(samples[i][0], (c, h, w), first, size)

    # PIL decodes with the GIL released: threads read a folder several times faster.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(read, range(len(samples))))
    y = np.asarray([s[1] for s in samples], np.int64)
    classes = next(iter(folders.values())).classes
    _check_classes(root, y, classes)
    parts, start = {}, 0
    for name, f in folders.items():
        parts[name] = (x[start:start + len(f.samples)], y[start:start + len(f.samples)])
        start += len(f.samples)
    return parts, classes


def _image_folder(folder: Path):
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:  # torchvision finds the classes and the image files; we read them (_read_image)
        ds = ImageFolder(str(folder), loader=str)
    except FileNotFoundError as exc:
        raise DatasetError(f"{folder}: no images found ({exc}). Expected one subfolder per "
                           f"class holding image files ({', '.join(IMG_EXTENSIONS)})") from None
    if not ds.samples:
        raise DatasetError(f"{folder}: no images found in its class folders")
    if len(ds.classes) < 2:
        raise DatasetError(f"{folder}: one class folder ({ds.classes[0]}); a dataset needs at "
                           "least two classes")
    return ds


def _open(path: str):
    from PIL import Image, UnidentifiedImageError

    size = os.path.getsize(path)
    if size > MAX_IMAGE_FILE_BYTES:
        raise DatasetError(f"{path}: {size} bytes is larger than the "
                           f"{MAX_IMAGE_FILE_BYTES // 2**20} MiB allowed for one image file")
    try:
        img = Image.open(path)  # reads the header only
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise DatasetError(f"{path}: {img.width}x{img.height} pixels is more than the "
                               f"{MAX_IMAGE_PIXELS:,} allowed for one image; shrink the images")
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if img.mode in GREY_MODES:
        return img, 1
    if img.mode in COLOUR_MODES:
        return img, 3
    raise DatasetError(f"{path}: image mode {img.mode} is not supported; use 8-bit grey or RGB")


def _probe(path: str) -> tuple[int, int, int]:
    img, c = _open(path)
    return c, img.height, img.width


def _read_image(path: str, shape: tuple[int, int, int], first: str,
                size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img, c = _open(path)
    if c != shape[0]:
        kinds = {1: "grey", 3: "colour"}
        raise DatasetError(f"{path}: a {kinds[c]} image among {kinds[shape[0]]} ones (as "
                           f"{first}); convert them all to grey or all to RGB")
    if (img.height, img.width) != shape[1:]:
        raise DatasetError(f"{path}: {img.width}x{img.height} pixels, but {first} is "
                           f"{shape[2]}x{shape[1]}; every image must have the same size")
    img = img.convert("L" if c == 1 else "RGB")
    if (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img).reshape(size[0], size[1], c)


# -- .npz arrays

def _read_npz(path: Path, image_size: int | None):
    size = path.stat().st_size
    if size > MAX_DATA_BYTES:
        raise DatasetError(f"{path}: {size} bytes is larger than the "
                           f"{MAX_DATA_BYTES // 2**30} GiB allowed")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename: i.file_size for i in zf.infolist()}
        big = [m for m, n in members.items() if n > MAX_DATA_BYTES]
        if big:
            raise DatasetError(f"{path}: its array {big[0]} unpacks to {members[big[0]]} bytes, "
                               f"more than the {MAX_DATA_BYTES // 2**30} GiB allowed")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DatasetError(f"{path}: no array named {missing[0]!r} (found: "
                                   f"{', '.join(z.files) or 'none'}); it needs x (images) and "
                                   "y (labels)")
            x, y = z["x"], z["y"]
            names = z["class_names"] if "class_names" in z.files else None
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: "
                           f"{exc})") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DatasetError(f"{path}: x has shape {x.shape}; expected N x H x W (grey) or "
                           "N x H x W x C with C = 1 or 3")
    if len(x) == 0:
        raise DatasetError(f"{path}: x holds no images")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise DatasetError(f"{path}: x has dtype {x.dtype}; expected uint8 (0..255) or "
                               "float in [0, 1]")
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            raise DatasetError(f"{path}: x is float but not all in [0, 1] (min {np.nanmin(x):.3g}, "
                               f"max {np.nanmax(x):.3g}); scale it, or store uint8")
        x = x.astype(np.float32)
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{path}: y has shape {y.shape} but x holds {len(x)} images; "
                           "one label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: y has dtype {y.dtype}; labels must be integers "
                           "(class indices 0..K-1)")
    y = y.astype(np.int64)
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DatasetError(f"{path}: class_names must be a 1-d array of strings, not "
                               f"{names.dtype} of shape {names.shape}")
        classes = [str(n) for n in names.tolist()]
    else:
        classes = [str(k) for k in range(int(y.max(initial=0)) + 1)]
    if y.min() < 0 or y.max() >= len(classes):
        bad = int(y[(y < 0) | (y >= len(classes))][0])
        raise DatasetError(f"{path}: label {bad} in y is out of range: labels must be in "
                           f"0..{len(classes) - 1}" + (f" ({len(classes)} class_names)"
                                                        if names is not None else ""))
    _check_classes(path, y, classes)
    h, w = x.shape[1:3]
    size = _target_size(path, h, w, image_size)
    _check_bytes(path, len(x), *size, x.shape[-1])
    if size != (h, w):
        x = _resize_array(x, size)
    return {"all": (x, y)}, classes


def _resize_array(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) -> (N, H', W', C), bilinear with antialiasing, in chunks; same dtype."""
    out = []
    for chunk in np.array_split(x, max(1, len(x) // 4096)):
        t = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
        t = t.permute(0, 2, 3, 1)
        out.append(t.round().clamp(0, 255).to(torch.uint8).numpy() if x.dtype == np.uint8
                   else t.clamp(0, 1).numpy())
    return np.concatenate(out)
