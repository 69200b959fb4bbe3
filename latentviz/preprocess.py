"""A user's picture prepared the way its dataset's images were made, so that a digit drawn
big, off-centre or dark on light reaches the model looking like a test image.

- MNIST (LeCun, Bottou, Bengio & Haffner 1998, Section III.A, and the MNIST page): each
  digit was size-normalised to fit a 20 x 20 box keeping its aspect ratio (anti-aliased,
  hence grey levels) and centred in 28 x 28 by its centre of mass. Rotated MNIST shares it.
- Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Section 2): the product is trimmed, its
  longest edge resized to 28 and the image centred, without a margin.
- scikit-learn's digits (UCI optdigits, Alpaydin & Kaynak 1998): NIST's preprocessing
  normalised each digit into a 32 x 32 bitmap, then the "on" pixels were counted in 4 x 4
  blocks, giving 8 x 8 counts in 0..16 (the array here is the count / 16).

Before that, the picture is made light on dark (as the datasets are) and its background
removed: a photo's paper is never black, and its grey level would otherwise read as ink.
Any other dataset gets the whole picture resized (``prepare_plain``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

INK = 0.15          # after background removal, fainter pixels are paper, not ink
SPECK = 0.05        # ink pieces lighter than this share of the largest one are noise


class NoInkError(ValueError):
    """The picture has no ink: nothing darker (or lighter) than its background."""


@dataclass(frozen=True)
class Prepared:
    """The model's input (1, C, H, W) in [0, 1] and what was done to make it."""

    x: Tensor
    inverted: bool
    steps: tuple[str, ...]


def to_ink(img: np.ndarray, invert: bool | None = None) -> tuple[np.ndarray, bool]:
    """Grey (H, W) in [0, 255] or [0, 1] -> ink in [0, 1] on a zero background.

    ``invert`` None: invert when the border (the paper) is brighter than mid-grey. The
    background level is the border's median; it maps to 0 and the 99th percentile to 1,
    and what stays under :data:`INK` is set to 0."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected a greyscale image (H, W), got shape {a.shape}")
    if a.size == 0:
        raise NoInkError("the image has no pixels")
    a = a / 255.0 if a.max() > 1.0 else a
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if invert is None:
        invert = bool(np.median(border) > 0.5)
    if invert:
        a, border = 1.0 - a, 1.0 - border
    bg = float(np.median(border))
    top = float(np.percentile(a, 99.5))
    if top - bg < 0.1:
        raise NoInkError("the image has no ink: nothing stands out from its background")
    a = np.clip((a - bg) / (top - bg), 0.0, 1.0)
    a[a < INK] = 0.0
    return _drop_specks(a), invert


def _drop_specks(a: np.ndarray) -> np.ndarray:
    """Keep the strokes: connected pieces of ink holding at least SPECK of the largest
    piece's mass. Sensor noise and dust would otherwise stretch the ink's bounding box
    over the whole photo."""
    labels, n = ndimage.label(a > 0)
    if n <= 1:
        return a
    mass = ndimage.sum(a, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], mass >= SPECK * mass.max()])
    return np.where(keep[labels], a, 0.0).astype(np.float32)


def _crop(a: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit(a: np.ndarray, box: int) -> np.ndarray:
    """Resize so that the longer side is ``box`` (aspect kept), anti-aliased."""
    h, w = a.shape
    s = box / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    t = torch.as_tensor(a)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", antialias=True,
                         align_corners=False)[0, 0].clamp(0, 1).numpy()


def _paste_centred(a: np.ndarray, size: int, by_mass: bool) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    h, w = a.shape
    y0, x0 = (size - h) // 2, (size - w) // 2
    out[y0:y0 + h, x0:x0 + w] = a
    if by_mass and out.sum() > 0:
        cy, cx = ndimage.center_of_mass(out)
        c = (size - 1) / 2
        out = ndimage.shift(out, (c - cy, c - cx), order=1, mode="constant")
    return np.clip(out, 0, 1)


def prepare_mnist(ink: np.ndarray) -> np.ndarray:
    """LeCun's procedure: fit 20 x 20 keeping the aspect ratio, centre of mass at the
    centre of 28 x 28."""
    return _paste_centred(_fit(_crop(ink), 20), 28, by_mass=True)


def prepare_fashion(ink: np.ndarray) -> np.ndarray:
    """Fashion-MNIST's: trimmed, longest edge 28, centred."""
    return _paste_centred(_fit(_crop(ink), 28), 28, by_mass=False)


def prepare_optdigits(ink: np.ndarray) -> np.ndarray:
    """optdigits': normalised into 32 x 32 (aspect kept, centred), "on" pixels counted in
    4 x 4 blocks -> 8 x 8 in [0, 1]."""
    big = _paste_centred(_fit(_crop(ink), 32), 32, by_mass=False)
    on = (big > 0.5).astype(np.float32)
    return on.reshape(8, 4, 8, 4).mean(axis=(1, 3))


PROCEDURES = {"mnist": (prepare_mnist, "fit 20x20, centre of mass in 28x28 (MNIST)"),
              "rotated_mnist": (prepare_mnist, "fit 20x20, centre of mass in 28x28 (MNIST)"),
              "fashion_mnist": (prepare_fashion, "longest edge 28, centred (Fashion-MNIST)"),
              "digits": (prepare_optdigits, "32x32 bitmap, 4x4 block counts (optdigits)")}


def prepare_plain(ink: np.ndarray, image_shape) -> np.ndarray:
    c, h, w = image_shape
    t = torch.as_tensor(ink)[None, None]
    return F.interpolate(t, size=(h, w), mode="area")[0, 0].clamp(0, 1).numpy()


def prepare_like(img: np.ndarray, dataset: str, image_shape, invert: bool | None = None
                 ) -> Prepared:
    """A user's grey picture -> the model's input, made as ``dataset``'s images were.

    Raises :class:`NoInkError` for a blank picture."""
    ink, inverted = to_ink(img, invert)
    steps = ["inverted to light on dark"] if inverted else []
    steps.append("background removed")
    c, h, w = image_shape
    proc = PROCEDURES.get(dataset)
    if proc is not None and (h, w) == ((8, 8) if dataset == "digits" else (28, 28)):
        a = proc[0](ink)
        steps.append(proc[1])
    else:
        a = prepare_plain(ink, image_shape)
        steps.append(f"resized to {h}x{w}")
    x = torch.as_tensor(a, dtype=torch.float32)[None, None].expand(1, c, h, w).contiguous()
    return Prepared(x, inverted, tuple(steps))
