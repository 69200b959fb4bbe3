"""Maps on disk: computed once per (checkpoint content, method, parameters, seed, sample),
read back by a new process, never trusted when damaged, bounded in size; shipped maps
are used first and only for exactly the map they were made for."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import latentviz as lv
from latentviz import mapcache, projections

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LATENTVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LATENTVIZ_CACHE_MB", raising=False)
    return tmp_path / "cache" / "maps"


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A stand-in checkpoint: the cache keys maps by the file's bytes only."""
    p = tmp_path / "ckpts" / "model.safetensors"
    p.parent.mkdir()
    p.write_bytes(b"weights v1")
    return p


@pytest.fixture
def z() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(120, 5)) + np.repeat(rng.normal(scale=6, size=(3, 5)), 40, axis=0)


def no_fitting(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the map was fitted again")
    monkeypatch.setattr(projections, "fit", boom)


def test_second_call_reads_the_map_back(cache, ckpt, z, monkeypatch):
    ids, first = mapcache.projection(ckpt, z, "pca", 50, 3)
    assert first.source == "computed" and len(list(cache.glob("*.map"))) == 1
    no_fitting(monkeypatch)
    ids2, again = mapcache.projection(ckpt, z, "pca", 50, 3)
    assert again.source == "cache" and np.array_equal(ids, ids2)
    np.testing.assert_allclose(again.embedding, first.embedding, atol=1e-5)
    np.testing.assert_allclose(again.inverse_transform(first.embedding[:4]),
                               first.inverse_transform(first.embedding[:4]), atol=1e-6)


SCRIPT = """
import sys, numpy as np
from latentviz import mapcache, projections
if sys.argv[2] == "refuse":
    def boom(*a, **k):
        raise SystemExit("fitted again")
    projections.fit = boom
z = np.random.default_rng(0).normal(size=(80, 4))
ids, p = mapcache.projection(sys.argv[1], z, "tsne", 60, 1)
print(p.source, float(np.abs(p.embedding).sum()))
"""


@pytest.mark.skipif(not __import__("importlib").util.find_spec("openTSNE"),
                    reason="openTSNE is not installed")
def test_a_new_process_reads_the_map_a_previous_one_computed(cache, ckpt):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def run(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(ckpt), mode], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    first = run("fit")
    second = run("refuse")            # this process would exit if it fitted anything
    assert first[0] == "computed" and second[0] == "cache"
    assert float(second[1]) == pytest.approx(float(first[1]), rel=1e-6)


def test_another_checkpoint_method_seed_or_sample_is_another_map(cache, ckpt, z):
    _, a = mapcache.projection(ckpt, z, "pca", 50, 0)
    assert mapcache.projection(ckpt, z, "pca", 50, 1)[1].source == "computed"
    assert mapcache.projection(ckpt, z, "pca", 60, 0)[1].source == "computed"
    ckpt.write_bytes(b"weights v2")                            # retrained: new content
    assert mapcache.projection(ckpt, z, "pca", 50, 0)[1].source == "computed"
    assert len(list(cache.glob("*.map"))) == 4


@pytest.mark.parametrize("damage", ["truncate", "garbage", "nan", "shape", "pickle", "key"])
def test_a_damaged_entry_is_recomputed_never_trusted(cache, ckpt, z, damage):
    _, good = mapcache.projection(ckpt, z, "pca", 50, 0)
    (entry,) = cache.glob("*.map")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "garbage":
        entry.write_bytes(b"\x00" * 500)
    else:
        with np.load(entry, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if damage == "nan":
            arrays["embedding"][3, 1] = np.nan
        elif damage == "shape":
            arrays["embedding"] = arrays["embedding"][:-1]
        elif damage == "pickle":
            arrays["embedding"] = np.array([{"x": 1}] * 50, dtype=object)
        else:   # an entry renamed from another map: its key says so
            arrays["meta"] = np.array(str(arrays["meta"]).replace('"seed": 0', '"seed": 9'))
        with open(entry, "wb") as f:
            np.savez(f, **arrays)
    _, again = mapcache.projection(ckpt, z, "pca", 50, 0)
    assert again.source == "computed"
    np.testing.assert_allclose(again.embedding, good.embedding)
    assert np.isfinite(again.embedding).all()
    assert mapcache.projection(ckpt, z, "pca", 50, 0)[1].source == "cache"   # rewritten


def test_the_cache_stays_within_its_bound_dropping_the_least_recently_used(cache, ckpt, z,
                                                                           monkeypatch):
    mapcache.projection(ckpt, z, "pca", 100, 0)
    size = next(cache.glob("*.map")).stat().st_size
    monkeypatch.setenv("LATENTVIZ_CACHE_MB", str(3.5 * size / 2 ** 20))   # room for 3
    for seed in range(1, 3):
        mapcache.projection(ckpt, z, "pca", 100, seed)
        time.sleep(0.02)
    mapcache.projection(ckpt, z, "pca", 100, 0)          # seed 0 used again: now the newest
    time.sleep(0.02)
    for seed in range(3, 6):
        mapcache.projection(ckpt, z, "pca", 100, seed)
        total = sum(p.stat().st_size for p in cache.glob("*.map"))
        assert total <= 3.5 * size, f"{total} bytes in the cache, bound {3.5 * size:.0f}"
    assert len(list(cache.glob("*.map"))) == 3
    no_fitting(monkeypatch)
    for seed in (3, 4, 5):                                # the three most recent survive
        assert mapcache.projection(ckpt, z, "pca", 100, seed)[1].source == "cache"


def test_shipped_maps_come_first_and_only_for_their_own_map(cache, ckpt, z, monkeypatch):
    (path,) = mapcache.make_shipped_maps(ckpt, z, ("pca",))
    assert path == ckpt.parent / "maps" / "model.pca.map"
    with np.load(path, allow_pickle=False) as f:
        assert f["embedding"].dtype == np.float16
    ids, p = mapcache.projection(ckpt, z, "pca", len(z), 0)
    assert p.source == "shipped" and np.array_equal(ids, np.arange(len(z)))
    np.testing.assert_allclose(p.embedding, projections.fit(z, "pca").embedding, atol=0.02)
    np.testing.assert_allclose(p.inverse_transform(p.embedding[:3]),
                               projections.fit(z, "pca").inverse_transform(p.embedding[:3]),
                               atol=1e-9)                # components kept exact
    assert not list(cache.glob("*.map"))                  # nothing computed or cached
    assert mapcache.projection(ckpt, z, "pca", len(z), 1)[1].source == "computed"
    ckpt.write_bytes(b"weights v2")                       # replaced checkpoint: stale map
    assert mapcache.projection(ckpt, z, "pca", len(z), 0)[1].source == "computed"
    assert path.exists()                                  # a shipped file is never deleted


@pytest.mark.skipif(not __import__("importlib").util.find_spec("umap"),
                    reason="umap-learn is not installed")
def test_a_shipped_umap_map_places_and_inverts_new_points(cache, ckpt, z):
    mapcache.make_shipped_maps(ckpt, z, ("umap",))
    _, p = mapcache.projection(ckpt, z, "umap", len(z), 0)
    assert p.source == "shipped"
    placed = p.transform(z[:3])
    assert placed.shape == (3, 2) and np.isfinite(placed).all()
    back = p.inverse_transform(p.embedding[[0, 50, 100]])
    centres = np.stack([z[i * 40:(i + 1) * 40].mean(0) for i in range(3)])
    assert list(np.linalg.norm(back[:, None] - centres[None], axis=2).argmin(1)) == [0, 1, 2]


def test_the_maps_command_writes_every_checkpoints_default_maps(cache, tmp_path, digits):
    folder = tmp_path / "shipped"
    model = lv.build("vae", image_shape=digits.image_shape, n_classes=digits.n_classes,
                     latent_dim=4, hidden=16)
    lv.save(folder / "digits-vae.safetensors", model, dataset="digits")
    from latentviz.__main__ import main as cli
    assert cli(["maps", str(folder), "--methods", "pca"]) == 0
    assert (folder / "maps" / "digits-vae.pca.map").is_file()
    from latentviz.embeddings import encode_split
    z = encode_split(model.eval(), digits.x_test, digits.y_test).z
    _, p = mapcache.projection(folder / "digits-vae.safetensors", z, "pca", len(z), 0)
    assert p.source == "shipped"
