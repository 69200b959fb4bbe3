"""Projections kept on disk: a map is computed once per (checkpoint content, method,
parameters, seed, sample) and read back by every later process.

Where a map is looked for, in order:

1. the shipped map beside the checkpoint, ``<folder>/maps/<stem>.<method>.map``: the
   default map (all test images, seed 0, default parameters), float16 coordinates, made by
   :func:`make_shipped_maps` (``python -m latentviz maps``);
2. the user's cache, ``$LATENTVIZ_CACHE/maps`` (default ``~/.cache/latentviz/maps``), one
   ``<key>.map`` per map, float32, bounded in total size (``$LATENTVIZ_CACHE_MB``, default
   256): the least recently used entries go first;
3. otherwise the map is fitted and written to the user's cache.

Every entry holds its key (the checkpoint's SHA-256, method, parameters, seed, sample
size, split, a digest of the sampled ids) and is checked against it, and its arrays for
shape, dtype and finiteness; anything that does not check out is not used (a user-cache
entry is deleted and recomputed). Files are NumPy ``.npz`` archives named ``.map`` (maps,
not data sets), read with ``allow_pickle=False``: data, never code. Writes go to a
temporary file renamed into place, so a reader never sees half a map.

What is stored is what redraws the map and inverts it: the 2-D coordinates, and for PCA
its components and mean (exact inverse and placing of new points). t-SNE and UMAP need the
fitted latents to place or invert points; those are the checkpoint's encodings, which the
caller passes in (``z``): the neighbour search and t-SNE's affinities are rebuilt from them
on first use (:func:`latentviz.projections.restore`), the optimised layout never is.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from . import projections
from .checkpoints import atomic_write
from .projections import METHODS, Projector, ProgressFn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MAX_MB = 256
MAX_ENTRY_BYTES = 64 * 2 ** 20   # 70,000 points in float64 take 1.1 MB
#: The parameters :func:`latentviz.projections.fit` is called with; part of every key.
DEFAULT_PARAMS = {"pca": {}, "tsne": {"perplexity": 30.0},
                  "umap": {"n_neighbors": 15, "min_dist": 0.1}}
_FLOATS = (np.float16, np.float32, np.float64)


def cache_dir() -> Path:
    """The user's map cache: ``$LATENTVIZ_CACHE/maps``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``latentviz/maps``."""
    env = os.environ.get("LATENTVIZ_CACHE")
    if env:
        return Path(env).expanduser() / "maps"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentviz" / "maps"


def max_bytes() -> int:
    return int(float(os.environ.get("LATENTVIZ_CACHE_MB", DEFAULT_MAX_MB)) * 2 ** 20)


SUFFIX = ".map"   # a NumPy .npz archive of one map (2-D coordinates), not a data set

_HASHES: dict[tuple, str] = {}


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's weights: its tensors' names, dtypes, shapes and bytes,
    not its JSON metadata (remembered per path, size and mtime). A map belongs to the
    weights it was made from, whatever the file is called and whatever metrics are added
    to its header later."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            try:
                index = json.loads(f.read(n)) if 0 < n <= 100 * 2 ** 20 else None
            except ValueError:
                index = None
            if isinstance(index, dict):
                index.pop("__metadata__", None)
                h.update(json.dumps(index, sort_keys=True).encode())
            else:                               # not a safetensors file: all of it
                f.seek(0)
            for block in iter(lambda: f.read(2 ** 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def map_key(digest: str, method: str, params: dict, seed: int, ids: np.ndarray,
            n_total: int, split: str = "test") -> dict:
    """What a map depends on, as the JSON-able dict stored in (and checked against) it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    extra = {"n_epochs": projections.UMAP_EPOCHS} if method == "umap" else {}
    return {"format": FORMAT_VERSION, "checkpoint_sha256": digest, "method": method,
            "params": {**DEFAULT_PARAMS[method], **(params or {}), **extra},
            "seed": int(seed), "n": int(len(ids)), "n_total": int(n_total), "split": split,
            "ids": ids_digest(ids)}


def key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def shipped_path(checkpoint: str | os.PathLike, method: str) -> Path:
    """Where a checkpoint's shipped default map lives: ``maps/<stem>.<method>.map``
    in the checkpoint's own folder."""
    p = Path(checkpoint)
    return p.parent / "maps" / f"{p.stem}.{method}{SUFFIX}"


# ----------------------------------------------------------------------------- entries

def write_entry(path: Path, key: dict, proj: Projector, *, dtype=np.float32) -> Path:
    """Store ``proj``'s map under ``key`` at ``path``, atomically (temp file, rename)."""
    arrays = {"embedding": np.asarray(proj.embedding, dtype=dtype)}
    for name, a in proj.arrays.items():  # PCA's components and mean: tiny, kept exact
        arrays[name] = np.asarray(a, dtype=np.float64)
    meta = {"key": key, "params": _jsonable(proj.params)}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    atomic_write(path, buf.getvalue())
    return path


def _jsonable(params: dict) -> dict:
    return json.loads(json.dumps(params, default=float))


class BadEntry(ValueError):
    """A stored map that is unreadable, truncated, foreign or inconsistent."""


def read_entry(path: Path, key: dict, z: np.ndarray | None, source: str) -> Projector:
    """The map stored at ``path`` as a :class:`Projector` over the latents ``z`` (N, D),
    if it is exactly the map ``key`` describes; raises :class:`BadEntry` otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_ENTRY_BYTES:
            raise BadEntry(f"{path.name}: {size} bytes, more than any map needs")
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            if "meta" not in files or "embedding" not in files:
                raise BadEntry(f"{path.name}: missing arrays ({sorted(files)})")
            meta = json.loads(str(f["meta"][()]))
            arrays = {k: f[k] for k in files - {"meta"}}
    except BadEntry:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, zlib, JSON and NumPy each raise their own
        raise BadEntry(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise BadEntry(f"{path.name}: made for another checkpoint, method or sample")
    emb = arrays.pop("embedding")
    n, method = key["n"], key["method"]
    if emb.dtype.type not in _FLOATS or emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1:
        raise BadEntry(f"{path.name}: map of shape {emb.shape} ({emb.dtype}), expected ({n}, k)")
    if z is not None and len(z) != n:
        raise BadEntry(f"{path.name}: {n} points, but {len(z)} latents were given")
    for name, a in {"embedding": emb, **arrays}.items():
        if a.dtype.type not in _FLOATS or not np.isfinite(a).all():
            raise BadEntry(f"{path.name}: {name} is not finite floats")
    if method == "pca":
        w, mean = arrays.get("components"), arrays.get("mean")
        d = w.shape[1] if w is not None and w.ndim == 2 else -1
        if (w is None or mean is None or mean.shape != (d,) or len(w) > emb.shape[1]
                or (z is not None and z.shape[1] != d)):
            raise BadEntry(f"{path.name}: PCA components/mean missing or of the wrong shape")
    params = meta.get("params")
    if not isinstance(params, dict):
        raise BadEntry(f"{path.name}: no parameters")
    return projections.restore(method, params, emb, z, arrays, source=source)


# ----------------------------------------------------------------------------- the cache

def projection(checkpoint: str | os.PathLike, z: np.ndarray, method: str, n: int, seed: int,
               *, split: str = "test", params: dict | None = None,
               progress: ProgressFn | None = None, folder: str | os.PathLike | None = None,
               shipped: bool = True) -> tuple[np.ndarray, Projector]:
    """(ids, fitted map) of ``n`` of the latents ``z`` (all of a split, (N, D)) of a
    checkpoint, sampled with ``seed``: the shipped map, else the user's cache, else fitted
    (``progress`` is called only then) and stored. ``Projector.source`` says which."""
    z = np.asarray(z)
    ids = projections.sample_indices(len(z), int(n), int(seed))
    key = map_key(content_hash(checkpoint), method, params, seed, ids, len(z), split)
    zs = z[ids]
    if shipped:
        sp = shipped_path(checkpoint, method)
        if sp.is_file():
            try:
                return ids, read_entry(sp, key, zs, "shipped")
            except BadEntry as exc:
                log.info("shipped map not used: %s", exc)
    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / f"{key_name(key)}{SUFFIX}"
    if path.is_file():
        try:
            proj = read_entry(path, key, zs, "cache")
            _touch(path)
            return ids, proj
        except BadEntry as exc:
            log.warning("map cache entry recomputed: %s", exc)
            path.unlink(missing_ok=True)
    proj = projections.fit(zs, method, random_state=int(seed), progress=progress,
                           **{**DEFAULT_PARAMS[method], **(params or {})})
    try:
        write_entry(path, key, proj)
        evict(folder, max_bytes(), keep=path)
    except OSError as exc:   # a read-only or full disk costs the next process a refit only
        log.warning("map not cached (%s)", exc)
    return ids, proj


def _touch(path: Path) -> None:
    try:
        os.utime(path)       # the mtime is the entry's last use (atime is often not kept)
    except OSError:
        pass


def evict(folder: str | os.PathLike, limit: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used entries of ``folder`` until the rest fit in
    ``limit`` bytes (``keep``, the entry just written, goes last); stale temp files of
    interrupted writes go too. Returns what was deleted."""
    folder = Path(folder)
    entries = []
    for p in folder.glob(f"*{SUFFIX}"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        entries.append((p == keep, st.st_mtime, st.st_size, p))
    total = sum(e[2] for e in entries)
    gone = []
    for _, _, size, p in sorted(entries, key=lambda e: (e[0], e[1])):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        total -= size
        gone.append(p)
    for t in folder.glob(".*.tmp"):
        try:
            if time.time() - t.stat().st_mtime > 3600:
                t.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
    return gone


# ----------------------------------------------------------------------------- shipped maps

def make_shipped_maps(checkpoint: str | os.PathLike, z: np.ndarray,
                      methods=METHODS, *, force: bool = False,
                      progress: ProgressFn | None = None) -> list[Path]:
    """Write a checkpoint's default maps (all of ``z``, the test set's latents; seed 0;
    default parameters) as float16 ``maps/<stem>.<method>.map`` beside it. An existing
    map that still matches the checkpoint is kept unless ``force``."""
    ids = np.arange(len(z))
    digest = content_hash(checkpoint)
    out = []
    for method in methods:
        key = map_key(digest, method, DEFAULT_PARAMS[method], 0, ids, len(z))
        path = shipped_path(checkpoint, method)
        if path.is_file() and not force:
            try:
                read_entry(path, key, z, "shipped")
                out.append(path)
                continue
            except BadEntry:
                pass
        proj = projections.fit(np.asarray(z), method, random_state=0, progress=progress,
                               **DEFAULT_PARAMS[method])
        out.append(write_entry(path, key, proj, dtype=np.float16))
    return out


def make_all_shipped(folder: str | os.PathLike, data_dir=None, methods=METHODS, *,
                     force: bool = False, only: set[str] | None = None,
                     report=None) -> list[Path]:
    """:func:`make_shipped_maps` for every checkpoint in ``folder`` (its test set encoded
    on the CPU, as the app does). ``report(name, seconds)`` after each checkpoint."""
    import time

    from .checkpoints import list_checkpoints, load
    from .data import load_dataset
    from .embeddings import encode_split

    out, datasets = [], {}
    for ck in list_checkpoints(folder):
        if ck.error or (only and ck.name not in only):
            continue
        t0 = time.perf_counter()
        model, _ = load(ck.path)
        if ck.dataset not in datasets:
            datasets[ck.dataset] = load_dataset(ck.dataset, data_dir)
        data = datasets[ck.dataset]
        z = encode_split(model, data.x_test, data.y_test).z
        out += make_shipped_maps(ck.path, z, methods, force=force)
        if report:
            report(ck.name, time.perf_counter() - t0)
    return out


def add_arguments(p) -> None:
    """The ``maps`` command's flags (``python -m latentviz maps``)."""
    p.add_argument("folder", nargs="?", default="checkpoints")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default all)")
    p.add_argument("--only", default=None, help="comma-separated checkpoint names (stems)")
    p.add_argument("--force", action="store_true", help="rewrite maps that still match")
    p.add_argument("--data-dir", default=None)


def run(args) -> int:
    """Write the shipped default maps; one line per checkpoint on stderr, a total."""
    import sys

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad:
        print(f"error: unknown method {bad[0]!r}; one of {', '.join(METHODS)}", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    paths = make_all_shipped(args.folder, args.data_dir, methods, force=args.force, only=only,
                             report=lambda name, s: print(f"{name}: {s:.1f}s", file=sys.stderr,
                                                          flush=True))
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} maps, {total / 2 ** 20:.2f} MB in {Path(args.folder) / 'maps'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m latentviz maps", description=MAPS_HELP)
    add_arguments(p)
    return run(p.parse_args(argv))


MAPS_HELP = ("Write each checkpoint's default maps (all test images, seed 0; PCA, t-SNE, "
             "UMAP; float16) to FOLDER/maps/, where the app finds them before computing.")


if __name__ == "__main__":
    raise SystemExit(main())
