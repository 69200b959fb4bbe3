"""Checkpoints: one ``.safetensors`` file per run, never a pickle.

The tensors are the model's state dict (optionally stored in float16; say so in the
metadata) and, for resumable runs, the Adam state. The safetensors header's metadata holds
one JSON document under the key ``latentviz``: format version, variant, model and train
configs, dataset, seed, epochs, history, metrics, how it was made, library version and
the model's extra state (TreeVAE's topology). ``load`` checks the header itself before
handing the bytes to safetensors, rebuilds the model from the registry and the config,
and checks every tensor's name, shape and dtype against it: a file is data, nothing in it
is executed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .models import ConfigError, LatentModel, get_variant

log = logging.getLogger(__name__)

FORMAT = "latentviz"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 512 * 2 ** 20     # far above any model here; bounds uploads and mistakes
MAX_HEADER_BYTES = 16 * 2 ** 20
ALLOWED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                  "I64": torch.int64, "F64": torch.float64}
OPTIM_PREFIX = "optim."


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, truncated, foreign or mismatched."""


class MetaView:
    """Read-only views of a checkpoint's JSON metadata, for anything holding ``path``
    and ``meta`` (here and in the app's listing)."""

    path: "Path | str"
    meta: dict

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def variant(self) -> str:
        return self.meta.get("variant", "?")

    @property
    def dataset(self) -> str:
        return self.meta.get("dataset", "?")

    @property
    def metrics(self) -> dict:
        return self.meta.get("metrics") or {}

    @property
    def epochs(self) -> int:
        return int(self.meta.get("epochs") or 0)


@dataclass
class Checkpoint(MetaView):
    """A checkpoint's metadata (the JSON header), without the weights."""

    path: Path
    meta: dict
    error: str | None = None  # set by list_checkpoints for unreadable files


def save(path: str | os.PathLike, model: LatentModel, *, dataset: str, train_config=None,
         history=None, metrics: dict | None = None, made: dict | None = None,
         optimizer: torch.optim.Optimizer | None = None, half: bool = False,
         dataset_source: dict | None = None) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically (temp file, then rename).

    ``dataset_source``: your own images' identity (``Dataset.source``: path, images per
    class, content hash), by which ``data.dataset_for`` reopens and checks them."""
    from . import __version__

    path = Path(path)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        tensors[k] = v.contiguous()
    optim_meta = None
    if optimizer is not None:
        state = optimizer.state_dict()
        for pid, st in state["state"].items():
            for name, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{OPTIM_PREFIX}{pid}.{name}"] = value.detach().to("cpu").contiguous()
        optim_meta = {"param_groups": state["param_groups"],
                      "scalars": {str(pid): {n: float(v) for n, v in st.items() if not torch.is_tensor(v)}
                                  for pid, st in state["state"].items()}}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "variant": _variant_name(model), "config": model.config.to_dict(), "dataset": dataset,
        "train_config": train_config.to_dict() if train_config is not None else None,
        "seed": getattr(train_config, "seed", None),
        "epochs": history.epochs if history is not None else 0,
        "history": history.to_dict() if history is not None else None,
        "metrics": metrics or {}, "made": made or {}, "extra": model.extra_state(),
        "weights_dtype": "float16" if half else "float32", "optimizer": optim_meta,
    }
    if dataset_source:
        meta["dataset_source"] = dataset_source
    blob = st_save(tensors, metadata={FORMAT: json.dumps(meta)})
    _atomic_write(path, blob)
    return path


def _variant_name(model: LatentModel) -> str:
    if model.variant_name:
        return model.variant_name
    from .models import VARIANTS
    return next(v.name for v in VARIANTS.values() if v.cls is type(model))


def _atomic_write(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide shared checkpoints from other users
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_header(data: bytes | Path, source: str = "checkpoint") -> tuple[dict, dict]:
    """Parse and check a safetensors header -> (tensor table, latentviz metadata).

    Every length is checked against the bytes actually there before anything is read.
    """
    if isinstance(data, Path):
        # Size and bytes come from one open file: a run replacing the checkpoint between a
        # stat() and an open() would otherwise pair one file's size with another's header.
        try:
            f = open(data, "rb")
        except FileNotFoundError:
            raise CheckpointError(f"{source}: no such file") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise CheckpointError(f"{source}: {size} bytes is larger than the "
                                      f"{MAX_FILE_BYTES} allowed for a checkpoint")
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is not None and 0 < n <= min(MAX_HEADER_BYTES, size - 8):
                head += f.read(n)
    else:
        size = len(data)
        head = data[: 8 + MAX_HEADER_BYTES]
    if size < 8 or len(head) < 8:
        raise CheckpointError(f"{source}: the file is empty or truncated ({size} bytes); "
                              "not a safetensors checkpoint")
    n = struct.unpack("<Q", head[:8])[0]
    if n == 0 or n > MAX_HEADER_BYTES or n > size - 8:
        raise CheckpointError(f"{source}: not a safetensors checkpoint (its header claims "
                              f"{n} bytes in a file of {size})")
    try:
        header = json.loads(head[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: not a safetensors checkpoint (header is not JSON: "
                              f"{exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: not a safetensors checkpoint (header is not a table)")
    raw_meta = header.pop("__metadata__", None) or {}
    if not isinstance(raw_meta, dict) or FORMAT not in raw_meta:
        raise CheckpointError(f"{source}: a safetensors file, but not a latentviz checkpoint "
                              "(no 'latentviz' metadata)")
    try:
        meta = json.loads(raw_meta[FORMAT])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: its latentviz metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: its metadata does not describe a latentviz checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: format version {meta.get('format_version')!r}; this "
                              f"latentviz reads version {FORMAT_VERSION}")
    end = 0
    for name, t in header.items():
        if not isinstance(t, dict) or t.get("dtype") not in ALLOWED_DTYPES:
            raise CheckpointError(f"{source}: tensor {name!r} has an unsupported dtype "
                                  f"{t.get('dtype') if isinstance(t, dict) else t!r}")
        shape, offs = t.get("shape"), t.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                or not isinstance(offs, list) or len(offs) != 2):
            raise CheckpointError(f"{source}: tensor {name!r} has a malformed entry")
        end = max(end, int(offs[1]))
    if 8 + n + end > size:
        raise CheckpointError(f"{source}: truncated: its header describes {end} bytes of "
                              f"tensors but the file holds {size - 8 - n}")
    return header, meta


def read_meta(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    _, meta = read_header(path, str(path))
    return Checkpoint(path, meta)


def load(path: str | os.PathLike | bytes, device="cpu", *, name: str | None = None
         ) -> tuple[LatentModel, Checkpoint]:
    """Rebuild the model a checkpoint describes and load its weights.

    ``path`` may be the file's bytes (an upload); ``name`` then labels messages.
    Raises :class:`CheckpointError` with a clear message for any bad file.
    """
    if isinstance(path, (bytes, bytearray)):
        blob, source, where = bytes(path), name or "upload", Path(name or "upload")
    else:
        where = Path(path)
        source = str(where)
        read_header(where, source)  # refuses a foreign or oversized file before reading it all
        try:
            blob = where.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{source}: could not be read ({exc.strerror})") from None
    # Parse the bytes actually read: a running save may have replaced the file in between.
    if len(blob) > MAX_FILE_BYTES:
        raise CheckpointError(f"{source}: {len(blob)} bytes is larger than the "
                              f"{MAX_FILE_BYTES} allowed for a checkpoint")
    header, meta = read_header(blob, source)
    try:
        variant = get_variant(meta.get("variant"))
        config = variant.cls.Config.from_dict(dict(meta.get("config") or {}))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: its metadata does not describe a model this "
                              f"latentviz can build ({exc})") from None
    try:
        model = variant.cls(config)
        model.variant_name = variant.name
        model.load_extra_state(meta.get("extra") or {})
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: its model description is inconsistent ({exc})") from None
    expected = model.state_dict()
    stored = {k: v for k, v in header.items() if not k.startswith(OPTIM_PREFIX)}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = [k for k in expected if k in stored and list(expected[k].shape) != stored[k]["shape"]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {stored[k]['shape']}, the model needs "
                         f"{list(expected[k].shape)}")
        raise CheckpointError(f"{source}: weights do not match a {variant.name} model with its "
                              f"config: " + "; ".join(parts))
    try:
        tensors = st_load(blob)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{source}: the weights could not be read ({exc})") from None
    state = {}
    for k, ref in expected.items():
        t = tensors[k]
        if ref.is_floating_point() != t.is_floating_point():
            raise CheckpointError(f"{source}: tensor {k} has dtype {t.dtype}, expected {ref.dtype}")
        state[k] = t.to(ref.dtype)
        if ref.is_floating_point() and not torch.isfinite(state[k]).all():
            raise CheckpointError(f"{source}: tensor {k} holds NaN or infinite values")
    model.load_state_dict(state)
    model.to(device).eval()
    ckpt = Checkpoint(where, meta)
    ckpt.optimizer_tensors = {k[len(OPTIM_PREFIX):]: v for k, v in tensors.items()
                              if k.startswith(OPTIM_PREFIX)}
    return model, ckpt


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> bool:
    """Load the Adam state saved with ``save(..., optimizer=)``; False if none was saved."""
    om = ckpt.meta.get("optimizer")
    tensors = getattr(ckpt, "optimizer_tensors", {})
    if not om:
        return False
    state: dict = {}
    for pid, scalars in om["scalars"].items():
        state[int(pid)] = dict(scalars)
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for st in state.values():
        if "step" in st and not torch.is_tensor(st["step"]):
            st["step"] = torch.tensor(st["step"])
    optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    return True


def safe_filename(name: str) -> str:
    """An uploaded file's name reduced to a plain ``*.safetensors`` name in one folder:
    directories (``../``, absolute paths, backslashes) and odd characters are dropped."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    stem = base[: -len(".safetensors")] if base.endswith(".safetensors") else base
    stem = stem.strip("._-")[:80] or "upload"
    return stem + ".safetensors"


def store_upload(blob: bytes, filename: str, folder: str | os.PathLike) -> Path:
    """Check an uploaded checkpoint completely (it must load), then store it in
    ``folder`` under a safe name without overwriting anything."""
    load(blob, name=safe_filename(filename))  # raises CheckpointError; nothing is written
    folder = Path(folder)
    target = folder / safe_filename(filename)
    n = 1
    while target.exists():
        target = folder / f"{target.stem.rsplit('-', 1)[0] if n > 1 else target.stem}-{n}.safetensors"
        n += 1
    _atomic_write(target, blob)
    return target


def list_checkpoints(*folders: str | os.PathLike, partial: bool = False) -> list[Checkpoint]:
    """Every ``*.safetensors`` in the folders with its metadata; unreadable ones carry
    ``error`` instead of raising, so one bad file never hides the others. Unfinished runs
    (``*.partial.safetensors``) are left out unless ``partial``."""
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*.safetensors")):
            if p.name.endswith(".partial.safetensors") and not partial:
                continue
            try:
                out.append(read_meta(p))
            except CheckpointError as exc:
                out.append(Checkpoint(p, {}, str(exc)))
    return out
