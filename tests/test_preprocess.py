"""A user's picture is prepared the way its dataset's images were made (latentviz.preprocess):
a digit drawn big, off-centre and dark on light paper is read as well as a test image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from latentviz import checkpoints
from latentviz.data import prepare_image
from latentviz.preprocess import NoInkError, prepare_like, prepare_mnist, to_ink

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def photo_like(x: np.ndarray, zoom: int, rng) -> np.ndarray:
    """A test image as a photo of paper: enlarged, anywhere on a 2 x 3 wider sheet, dark
    ink on light grey paper with sensor noise, 0..255."""
    big = ndimage.zoom(x, zoom, order=1)
    sheet = np.zeros((big.shape[0] * 2, big.shape[1] * 3), np.float32)
    oy = rng.integers(0, sheet.shape[0] - big.shape[0])
    ox = rng.integers(0, sheet.shape[1] - big.shape[1])
    sheet[oy:oy + big.shape[0], ox:ox + big.shape[1]] = big
    return np.clip(0.85 - 0.7 * sheet + rng.normal(0, 0.03, sheet.shape), 0, 1) * 255


def accuracies(name: str, data, n: int, zoom: int) -> dict[str, float]:
    model, _ = checkpoints.load(SHIPPED / f"{name}.safetensors")
    model.eval()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(data.y_test), n, replace=False)
    photos = [photo_like(data.x_test[i, 0].numpy(), zoom, rng) for i in idx]
    ds = name.split("-")[0]
    with torch.no_grad():
        def acc(xs):
            return float((model.predict(torch.cat(xs)) == data.y_test[idx]).float().mean())
        return {"test": acc([data.x_test[i:i + 1] for i in idx]),
                "resized": acc([prepare_image(p, data.image_shape) for p in photos]),
                "prepared": acc([prepare_like(p, ds, data.image_shape).x for p in photos])}


def test_photos_of_digits_are_read_as_well_as_test_images(digits):
    a = accuracies("digits-lambda_hot", digits, 200, zoom=30)
    assert a["prepared"] >= a["test"] - 0.05, a
    assert a["resized"] < 0.5, a          # what a plain resize made of the same photos


def test_photos_of_mnist_digits_are_read_as_well_as_test_images(mnist):
    a = accuracies("mnist-lambda_hot", mnist, 200, zoom=10)
    assert a["prepared"] >= a["test"] - 0.05, a
    assert a["resized"] < 0.5, a


def test_mnist_preparation_fits_20x20_and_centres_the_mass():
    ink = np.zeros((300, 500), np.float32)
    ink[40:260, 380:420] = 1.0                        # a tall bar far off to the right
    out = prepare_mnist(ink)
    rows, cols = np.flatnonzero(out.max(1) > 0.1), np.flatnonzero(out.max(0) > 0.1)
    assert out.shape == (28, 28)
    assert rows[-1] - rows[0] + 1 <= 21 and cols[-1] - cols[0] + 1 <= 21
    cy, cx = ndimage.center_of_mass(out)
    assert abs(cy - 13.5) < 0.5 and abs(cx - 13.5) < 0.5


def test_dark_on_light_is_inverted_and_the_paper_removed():
    page = np.full((50, 50), 200.0)
    page[10:40, 24:27] = 30.0
    ink, inverted = to_ink(page)
    assert inverted and ink[0, 0] == 0.0 and ink[25, 25] == pytest.approx(1.0)


def test_a_blank_picture_is_refused_clearly():
    with pytest.raises(NoInkError, match="no ink"):
        prepare_like(np.full((40, 40), 255, np.uint8), "mnist", (1, 28, 28))
