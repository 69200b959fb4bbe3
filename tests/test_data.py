"""Datasets by name, from torchvision's layout offline, with clear errors."""
from __future__ import annotations

import gzip
import shutil

import pytest
import torch

import latentviz as lv
from latentviz.data import DatasetError, load_dataset, prepare_image, rotate_images

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_digits_is_embedded_and_split_stratified(digits):
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    assert torch.bincount(digits.y_test).min() >= 35  # about 36 per class


def test_mnist_loads_offline_from_the_dataset_root(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert mnist.x_train.mean().item() * 255 == pytest.approx(33.32, abs=0.01)
    assert mnist.class_names[3] == "3"


def test_fashion_mnist_loads_with_class_names(data_root):
    f = load_dataset("fashion_mnist", data_root, download=False)
    assert torch.bincount(f.y_test).tolist() == [1000] * 10
    assert f.class_names[9] == "Ankle boot"
    assert f.x_test.mean().item() * 255 == pytest.approx(73.15, abs=0.01)


def test_rotated_mnist_is_deterministic_and_rotated(data_root, mnist):
    r = load_dataset("rotated_mnist", data_root, download=False)
    assert r.x_train.shape == mnist.x_train.shape and torch.equal(r.y_train, mnist.y_train)
    assert not torch.equal(r.x_test[:100], mnist.x_test[:100])
    again = lv.data.rotate_dataset(mnist, seed=0)
    assert torch.equal(again.x_test[:100], r.x_test[:100]), "same seed, same rotations"


def test_rotation_by_90_degrees_matches_rot90():
    x = torch.rand(3, 1, 28, 28)
    got = rotate_images(x, torch.full((3,), 90.0))
    # 90 degrees counter-clockwise on screen (y down) == torch.rot90 over (W, H)
    assert torch.allclose(got, torch.rot90(x, 1, dims=(3, 2)), atol=1e-5) or \
        torch.allclose(got, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


def test_missing_dataset_offline_names_the_folder_and_the_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg


def test_truncated_dataset_file_is_reported_not_loaded(tmp_path, data_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, raw / f.name)
    for gz in raw.glob("*.gz"):  # as torchvision leaves them after a first load
        with gzip.open(gz) as src:
            (raw / gz.name[:-3]).write_bytes(src.read())
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:5008])  # cut short, as by a full disk
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte is corrupt or partial: 5008"):
        load_dataset("mnist", tmp_path, download=False)


def test_a_corrupt_archive_is_reported_naming_the_folder(tmp_path, data_root):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "FashionMNIST" / "raw").glob("*.gz"):
        shutil.copy(f, raw / f.name)
    gz = raw / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:1000])  # md5 no longer matches; offline, no re-download
    with pytest.raises(DatasetError, match=str(raw).replace("/", ".")):
        load_dataset("fashion_mnist", tmp_path, download=False)


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(lv.ConfigError, match="dataset.*one of digits, mnist"):
        load_dataset("cifar10")


def test_prepare_image_inverts_dark_on_light_and_resizes():
    img = torch.full((56, 56), 255.0)
    img[20:36, 26:30] = 0.0  # a dark stroke on white paper
    x = prepare_image(img.numpy(), (1, 28, 28))
    assert x.shape == (1, 1, 28, 28)
    assert x[0, 0, 0, 0] == 0.0 and x[0, 0, 14, 14] > 0.9
