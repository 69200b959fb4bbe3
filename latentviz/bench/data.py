"""Section ``data``: loading your own images (a folder of PNGs, an .npz) beside MNIST's own load."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .results import Report, Row


def bench_data(rep: Report, ctx: dict) -> None:
    rep.section("data", "your own images: a 60,000-image folder and .npz beside MNIST's load")
    from PIL import Image

    from ..data import _load_cached, default_data_dir, load_path_dataset

    root = str((Path(ctx["data_dir"]).expanduser() if ctx["data_dir"] else default_data_dir())
               .resolve())
    try:
        t0 = time.perf_counter()
        mnist = _load_cached.__wrapped__("mnist", root, False)  # not the lru_cache's copy
        t_mnist = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - any reason the dataset is missing
        rep.skip("data loading", f"MNIST not available ({type(exc).__name__}: {exc})"[:300])
        return
    n = 600 if ctx["quick"] else 60000
    x = (mnist.x_train[:n, 0] * 255).round().to(torch.uint8).numpy()
    y = mnist.y_train[:n].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mnist_png"
        for k in range(10):
            (folder / str(k)).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(x[i]).save(folder / str(y[i]) / f"{i:05d}.png")
        np.savez(Path(tmp) / "mnist.npz", x=x, y=y)
        rep.note(f"{n:,} MNIST training images written as 28x28 grey PNGs in 10 class "
                 f"folders ({sum(f.stat().st_size for f in folder.rglob('*.png')) / 2**20:.0f} "
                 "MiB) and as one .npz; each loaded once (first read after writing, so the "
                 "files are in the page cache); reference = MNIST's 70,000 images from its "
                 f"IDX files; {os.cpu_count()} CPUs, the folder read by up to 8 threads")
        for what, path in (("folder of PNGs", folder), (".npz", Path(tmp) / "mnist.npz")):
            t0 = time.perf_counter()
            data = load_path_dataset(path)
            t = time.perf_counter() - t0
            assert len(data.x_train) + len(data.x_test) == n
            rep.row(Row(f"load {n:,} images, {what}", t, t_mnist, "s", t_mnist / t,
                        note=f"{n / t:,.0f} img/s (incl. split and content hash)"))
