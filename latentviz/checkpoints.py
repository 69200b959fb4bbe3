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
import math
import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import header as hdr
from .models import ConfigError, LatentModel, get_variant

log = logging.getLogger(__name__)

FORMAT = "latentviz"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 512 * 2 ** 20     # far above any model here; bounds uploads and mistakes
MAX_HEADER_BYTES = 16 * 2 ** 20
ALLOWED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                  "I64": torch.int64, "F64": torch.float64}
OPTIM_PREFIX = "optim."
MAX_TENSORS = 100_000
MAX_PARAMS = MAX_FILE_BYTES // 4   # what a float32 file of the largest size holds
MAX_SAME_NAME = 1000               # uploads stored under one name (name-1, name-2, ...)


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
    def metrics(self) -> dict[str, float]:
        """Metric name -> value; a metric stored as null (not computable) reads as NaN."""
        return {k: math.nan if v is None else float(v)
                for k, v in (self.meta.get("metrics") or {}).items()}

    @property
    def epochs(self) -> int:
        return int(self.meta.get("epochs") or 0)

    @property
    def metrics_seed(self) -> int:
        """The seed the stored metrics drew their noise and k-means starts with (the run's,
        ``runs._train_and_save``); 0 where the header has none or one sklearn cannot take."""
        seed = self.meta.get("seed")
        return seed if isinstance(seed, int) and 0 <= seed < 2 ** 32 else 0


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
        "metrics": {k: v if isinstance(v, (int, float)) and math.isfinite(v) else None
                    for k, v in (metrics or {}).items()},  # NaN (not computable): null
        "made": made or {}, "extra": model.extra_state(),
        "weights_dtype": "float16" if half else "float32", "optimizer": optim_meta,
    }
    if dataset_source:
        meta["dataset_source"] = dataset_source
    # allow_nan=False: a header must read back under the strict parser of header.py.
    blob = st_save(tensors, metadata={FORMAT: json.dumps(meta, allow_nan=False)})
    atomic_write(path, blob)
    return path


def _variant_name(model: LatentModel) -> str:
    if model.variant_name:
        return model.variant_name
    from .models import VARIANTS
    return next(v.name for v in VARIANTS.values() if v.cls is type(model))


def atomic_write(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` through a temporary file renamed into place (readable by
    all, fsynced): a reader sees the old file or the new one, never half of one."""
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


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a plain file"


def _open_nonblocking(path, flags):
    # A FIFO opened for reading blocks until a writer comes; O_NONBLOCK returns at once.
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))


def _open_regular(path: Path, source: str):
    """``path`` open for reading, if it is a regular file: FIFOs, directories, devices
    and sockets are refused before they are opened (stat) and again after (fstat, in case
    the name was swapped in between), without ever blocking; a missing file, a symlink
    loop or a permission problem is a CheckpointError."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{source}: {_file_kind(mode)}, not a checkpoint file")
        f = open(path, "rb", opener=_open_nonblocking)
    except FileNotFoundError:
        raise CheckpointError(f"{source}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{source}: cannot be opened ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{source}: {_file_kind(mode)}, not a checkpoint file")
        os.set_blocking(f.fileno(), True)
    except BaseException:
        f.close()
        raise
    return f


def _check_size(size: int, source: str) -> None:
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{source}: {size} bytes is larger than the "
                              f"{MAX_FILE_BYTES} allowed for a checkpoint")


def _read_file(path: Path, source: str, whole: bool) -> tuple[bytes, int]:
    """(bytes, size) of one regular file, through one open file (a save replacing the file
    meanwhile cannot pair one file's size with another's header): the header part, or
    with ``whole`` all of it, read only after the header's framing has been checked."""
    try:
        with _open_regular(path, source) as f:
            size = os.fstat(f.fileno()).st_size
            _check_size(size, source)
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is not None and 0 < n <= min(MAX_HEADER_BYTES, size - 8):
                head += f.read(n)
            if whole:
                _split_header(head, size, source)  # refuses a foreign file before reading it all
                head += f.read(max(size - len(head), 0))
            return head, size
    except OSError as exc:  # an I/O error mid-read
        raise CheckpointError(f"{source}: could not be read ({exc.strerror or exc})") from None


def read_header(data: bytes | Path, source: str = "checkpoint") -> tuple[dict, dict]:
    """Parse and check a checkpoint's header -> (tensor table, latentviz metadata).

    Every length is checked against the bytes actually there before anything is read; the
    metadata is checked whole against ``header.meta_schema`` and against itself (dataset
    and image shape, epochs and history, optimizer state and parameters), and the model it
    describes is sized on the meta device (no memory) and matched against the tensor
    table. Anything wrong is a CheckpointError naming the field.
    """
    return _read(data, source)[:2]


def _read(data: bytes | Path, source: str):
    if isinstance(data, Path):
        head, size = _read_file(data, source, whole=False)
    else:
        head, size = bytes(data[: 8 + MAX_HEADER_BYTES]), len(data)
    table, meta, available = _split_header(head, size, source)
    variant, config = _check_meta(meta, source)
    _check_model(table, meta, variant, config, source)
    _check_tiling(table, available, source)
    return table, meta, variant, config


def _split_header(head: bytes, size: int, source: str) -> tuple[dict, dict, int]:
    """The safetensors framing -> (tensor table, latentviz document, bytes of tensor data)."""
    if size < 8 or len(head) < 8:
        raise CheckpointError(f"{source}: the file is empty or truncated ({size} bytes); "
                              "not a safetensors checkpoint")
    n = struct.unpack("<Q", head[:8])[0]
    if n == 0 or n > MAX_HEADER_BYTES or n > size - 8:
        raise CheckpointError(f"{source}: not a safetensors checkpoint (its header claims "
                              f"{n} bytes in a file of {size})")
    try:
        header = hdr.parse_json(head[8:8 + n], "header")
    except hdr.HeaderError as exc:
        raise CheckpointError(f"{source}: not a safetensors checkpoint (header {exc.problem})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: not a safetensors checkpoint (header is not a table)")
    raw_meta = header.pop("__metadata__", None) or {}
    if not isinstance(raw_meta, dict) or not isinstance(raw_meta.get(FORMAT), str):
        raise CheckpointError(f"{source}: a safetensors file, but not a latentviz checkpoint "
                              "(no 'latentviz' metadata)")
    try:
        meta = hdr.parse_json(raw_meta[FORMAT], "metadata")
    except hdr.HeaderError as exc:
        raise CheckpointError(f"{source}: its latentviz metadata is not valid JSON "
                              f"({exc.problem})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: its metadata does not describe a latentviz checkpoint")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(f"{source}: format version {version!r:.40}; this latentviz reads "
                              f"version {FORMAT_VERSION}")
    _check_table(header, size - 8 - n, source)
    return header, meta, size - 8 - n


def _check_table(table: dict, available: int, source: str) -> None:
    """Each tensor entry well-formed, its bytes within the file."""
    if len(table) > MAX_TENSORS:
        raise CheckpointError(f"{source}: {len(table)} tensors (at most {MAX_TENSORS})")
    for name, t in table.items():
        if not isinstance(t, dict) or t.get("dtype") not in ALLOWED_DTYPES:
            raise CheckpointError(f"{source}: tensor {name[:80]!r} has an unsupported dtype "
                                  f"{t.get('dtype') if isinstance(t, dict) else t!r:.40}")
        try:
            hdr.check(name, hdr.Str(hdr.MAX_NAME), "tensor name")
            hdr.check(t, hdr.TENSOR_ENTRY, f"tensor {name!r}")
        except hdr.HeaderError as exc:
            raise CheckpointError(f"{source}: tensor {name[:80]!r} has a malformed entry "
                                  f"({exc})") from None
        (b, e), shape = t["data_offsets"], t["shape"]
        if e > available:
            raise CheckpointError(f"{source}: truncated: its header describes tensor "
                                  f"{name[:80]!r} up to byte {e} but the file holds {available}")
        if b > e or e - b != math.prod(shape) * ALLOWED_DTYPES[t["dtype"]].itemsize:
            raise CheckpointError(f"{source}: tensor {name[:80]!r} has a malformed entry: bytes "
                                  f"{b}..{e} cannot hold a {t['dtype']} tensor of shape {shape}")



def _check_tiling(table: dict, available: int, source: str) -> None:
    """The tensors' bytes tile the data exactly, as safetensors requires (no overlap, no
    gap, nothing after): checked after the model, whose message says more."""
    spans = sorted((t["data_offsets"][0], t["data_offsets"][1], k) for k, t in table.items())
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise CheckpointError(f"{source}: tensor {name[:80]!r} overlaps another or leaves a "
                                  "gap; not a valid safetensors file")
        pos = e
    if pos != available:
        raise CheckpointError(f"{source}: {available - pos} bytes follow its tensors; not a "
                              "valid safetensors file")


def _check_meta(meta: dict, source: str):
    """The metadata against the declared schema, then against itself -> (variant, config)."""
    from .data import DATASETS, SHAPES
    from .models import VARIANTS
    from .train import TrainConfig

    name = meta.get("variant")
    variant = VARIANTS.get(name) if isinstance(name, str) else None
    schema = hdr.meta_schema(lambda: tuple(VARIANTS), variant.cls.Config if variant else None,
                             TrainConfig, variant.name if variant else None)
    try:
        hdr.check(meta, schema)
    except hdr.HeaderError as exc:
        raise CheckpointError(f"{source}: its metadata field {exc}") from None
    try:
        config = variant.cls.Config.from_dict(dict(meta["config"]))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: its metadata does not describe a model this "
                              f"latentviz can build (config: {exc})") from None
    try:
        tc = TrainConfig.from_dict(meta["train_config"]) if meta.get("train_config") else None
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: its metadata field train_config: {exc}") from None

    def refuse(text):
        raise CheckpointError(f"{source}: its metadata contradicts itself: {text}")
    dataset, own = meta["dataset"], meta.get("dataset_source")
    if own is not None:
        shape, n_classes = tuple(own["image_shape"]), len(own["images_per_class"]["train"])
        if dataset != own["path"]:
            refuse(f"dataset {dataset[:80]!r} is not dataset_source.path {own['path'][:80]!r}")
    elif dataset in SHAPES:
        shape, n_classes = SHAPES[dataset]
    else:
        raise CheckpointError(f"{source}: its metadata field dataset: {dataset[:80]!r} is not "
                              f"one of {', '.join(DATASETS)}")
    if tuple(config.image_shape) != tuple(shape):
        refuse(f"config.image_shape {list(config.image_shape)} does not fit the {dataset[:80]} "
               f"images, which are {list(shape)}")
    if config.n_classes != n_classes:
        refuse(f"config.n_classes {config.n_classes} does not fit {dataset[:80]}, which has "
               f"{n_classes} classes")
    history = meta.get("history")
    if history is not None:
        lengths = {k: len(history[k]) for k in ("train", "test", "seconds", "stages")}
        if len(set(lengths.values())) != 1:
            refuse(f"the history's lists differ in length ({lengths})")
        if meta["epochs"] != lengths["train"]:
            refuse(f"epochs {meta['epochs']} but the history holds {lengths['train']}")
    if tc is not None and meta.get("seed") is not None and meta["seed"] != tc.seed:
        refuse(f"seed {meta['seed']} but train_config.seed {tc.seed}")
    return variant, config


def _check_model(table: dict, meta: dict, variant, config, source: str) -> None:
    """Build the described model on the meta device (shapes, no memory) and match it
    against the tensor table: names, shapes, dtypes, size; the optimizer state too."""
    tree = (meta.get("extra") or {}).get("tree")
    nodes = len(tree["nodes"]) if tree is not None else 0
    if nodes:  # growth adds 2 nodes per split; every node owns about 30 tensors
        bound = min(hdr.MAX_TREE_NODES, 3 + 2 * config.max_splits, 4 * config.max_leaves + 3,
                    max(len(table) // 16, 3))
        if nodes > bound:
            raise CheckpointError(f"{source}: its metadata field extra.tree.nodes lists "
                                  f"{nodes} nodes; at most {bound} fit its config and tensors")
    try:
        with torch.device("meta"):
            skeleton = variant.cls(config)
            # The initial tree (3 nodes) prices a node: refuse a vast tree before building it.
            _check_params(skeleton, max(nodes / 3, 1.0), source)
            skeleton.load_extra_state(meta.get("extra") or {})
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file's contents must not crash the reader
        raise CheckpointError(f"{source}: its model description is inconsistent "
                              f"({type(exc).__name__}: {exc})") from None
    _check_params(skeleton, 1.0, source)
    expected = skeleton.state_dict()
    stored = {k: v for k, v in table.items() if not k.startswith(OPTIM_PREFIX)}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = [k for k in expected if k in stored and list(expected[k].shape) != stored[k]["shape"]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(k[:80] for k in unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {stored[k]['shape']}, the model needs "
                         f"{list(expected[k].shape)}")
        raise CheckpointError(f"{source}: weights do not match a {variant.name} model with its "
                              f"config: " + "; ".join(parts))
    half = meta["weights_dtype"] == "float16"
    for k, ref in expected.items():
        dtype = stored[k]["dtype"]
        want = ("F16" if half else "F32") if ref.is_floating_point() else "I64"
        if dtype != want:
            raise CheckpointError(f"{source}: tensor {k} is {dtype}; with weights_dtype "
                                  f"{meta['weights_dtype']} it must be {want}")
    _check_optimizer(table, meta.get("optimizer"), [p.shape for p in skeleton.parameters()],
                     source, subset=getattr(skeleton, "fit_schedule", None) is not None)


def _check_params(skeleton: LatentModel, scale: float, source: str) -> None:
    n_params = sum(t.numel() for t in skeleton.state_dict().values()) * scale
    if n_params > MAX_PARAMS:
        raise CheckpointError(f"{source}: its config asks for about {int(n_params):,} "
                              f"parameters; at most {MAX_PARAMS:,} are allowed")


ADAM_STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _check_optimizer(table: dict, om: dict | None, shapes: list, source: str,
                     subset: bool = False) -> None:
    """The saved Adam state names each parameter once, with tensors of its shape."""
    keys = [k for k in table if k.startswith(OPTIM_PREFIX)]
    if om is None:
        if keys:
            raise CheckpointError(f"{source}: optimizer tensors ({keys[0][:80]}) but no "
                                  "optimizer state in its metadata")
        return
    # Adam numbers the parameters it was given 0..k-1: all of the model's, in order, or
    # (TreeVAE, cut off inside a subtree stage) the subtree's, whose shapes are the model's.
    ids = sorted(i for g in om["param_groups"] for i in g["params"])
    whole = not subset
    if ids != list(range(len(ids))) or len(ids) > len(shapes) or (whole and len(ids) != len(shapes)):
        raise CheckpointError(f"{source}: its metadata field optimizer.param_groups does not "
                              f"name {'the' if whole else 'some of the'} model's {len(shapes)} "
                              "parameters once each")
    known = {tuple(s) for s in shapes}
    for pid in om["scalars"]:
        if not (pid.isdigit() and int(pid) < len(ids)):
            raise CheckpointError(f"{source}: its metadata field optimizer.scalars names "
                                  f"parameter {pid[:20]!r}, which the optimizer does not have")
    for k in keys:
        pid, _, name = k[len(OPTIM_PREFIX):].partition(".")
        if not (pid.isdigit() and int(pid) < len(ids)) or name not in ADAM_STATE:
            raise CheckpointError(f"{source}: unexpected optimizer tensor {k[:80]!r}")
        shape = tuple(table[k]["shape"])
        fits = (shape == ()) if name == "step" else (
            shape in known if subset else shape == tuple(shapes[int(pid)]))
        if not fits or table[k]["dtype"] not in ("F32", "F64", "F16", "BF16"):
            raise CheckpointError(f"{source}: optimizer tensor {k} has shape {list(shape)} "
                                  f"({table[k]['dtype']}), which no parameter of the model has")


def read_meta(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    _, meta = read_header(path, str(path))
    return Checkpoint(path, meta)


def load(path: str | os.PathLike | bytes, device="cpu", *, name: str | None = None
         ) -> tuple[LatentModel, Checkpoint]:
    """Rebuild the model a checkpoint describes and load its weights.

    ``path`` may be the file's bytes (an upload); ``name`` then labels messages.
    Raises :class:`CheckpointError` with a clear message for any bad file: the header is
    checked whole (:func:`read_header`) before any memory is allocated for the model.
    """
    if isinstance(path, (bytes, bytearray)):
        blob, source, where = bytes(path), name or "upload", Path(name or "upload")
    else:
        where = Path(path)
        source = str(where)
        blob, _ = _read_file(where, source, whole=True)
    _check_size(len(blob), source)
    # Parse the bytes actually read: a running save may have replaced the file in between.
    header, meta, variant, config = _read(blob, source)
    try:
        model = variant.cls(config)
        model.variant_name = variant.name
        model.load_extra_state(meta.get("extra") or {})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: its model description is inconsistent ({exc})") from None
    expected = model.state_dict()
    try:
        tensors = st_load(blob)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{source}: the weights could not be read ({exc})") from None
    state = {}
    for k, ref in expected.items():
        t = tensors[k]
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
    """Load the Adam state saved with ``save(..., optimizer=)``; False if none was saved.
    The state was checked against the model when the checkpoint was read."""
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
            st["step"] = torch.tensor(float(st["step"]))
    try:
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt.path}: its optimizer state does not fit the model "
                              f"({exc})") from None
    return True


def check_views(model: LatentModel, ckpt: Checkpoint, source: str, n: int = 8) -> None:
    """Take the views the app takes of a model, on a few images of its dataset: embed
    (with its classes and clusters), reconstruct, sample (by class, at its centres, at
    every tree node). CheckpointError if one fails or gives NaN or infinite values: a
    checkpoint stored for the app must work on every page."""
    from . import sampling
    from .embeddings import encode_split

    x, y = _few_images(ckpt, model.config, n)
    x, y = x.to(model.device), y.to(model.device)
    outs = {}
    try:
        with torch.no_grad():
            enc = encode_split(model, x, y)
            outs["embedding"] = torch.as_tensor(enc.z)
            outs["reconstruction"] = model.reconstruct(x, y if model.conditional else None)
            outs["samples"] = sampling.random_samples(model, 4, seed=0)
            if sampling.samples_by_class(model):
                outs["class samples"] = sampling.class_rows(model, 1)
            centres = sampling.model_centres(model)
            if centres is not None:
                outs["centres"] = torch.as_tensor(centres)
            if getattr(model, "tree", None) is not None:
                from .tree import sample_nodes
                outs["node samples"] = torch.cat(list(sample_nodes(model, 1).values()))
    except Exception as exc:  # noqa: BLE001 - whatever a page would meet, said here
        raise CheckpointError(f"{source}: it loads, but the app cannot use it "
                              f"({type(exc).__name__}: {exc})") from None
    for what, t in outs.items():
        if not torch.isfinite(torch.as_tensor(t).float()).all():
            raise CheckpointError(f"{source}: its {what} hold NaN or infinite values")


def _few_images(ckpt: Checkpoint, config, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n test images of the checkpoint's dataset where it is at hand, else n seeded
    random images of its shape (a view must hold for any image)."""
    from .data import DatasetError, SHAPES, load_dataset

    if ckpt.dataset in SHAPES:
        try:
            data = load_dataset(ckpt.dataset, download=False)
            return data.x_test[:n], data.y_test[:n]
        except (DatasetError, OSError, ValueError):
            pass
    g = torch.Generator().manual_seed(0)
    return (torch.rand((n, *config.image_shape), generator=g),
            torch.arange(n) % config.n_classes)


def safe_filename(name: str) -> str:
    """An uploaded file's name reduced to a plain ``*.safetensors`` name in one folder:
    directories (``../``, absolute paths, backslashes) and odd characters are dropped, and
    it never ends in ``.partial.safetensors`` (the name of an interrupted run)."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    stem = base[: -len(".safetensors")] if base.endswith(".safetensors") else base
    stem = stem.strip("._-")[:80] or "upload"
    while stem.lower().endswith(".partial"):
        stem = stem[: -len(".partial")] + "-partial"
    return stem + ".safetensors"


def store_upload(blob: bytes, filename: str, folder: str | os.PathLike) -> Path:
    """Check an uploaded checkpoint completely (it must load and every view the app takes
    of it must work), then store it in ``folder`` under a safe name, never over another
    file: the bytes go to a temporary file that is hard-linked to the first free name
    (``os.link`` fails if the name exists, so two uploads at once cannot both take it)."""
    name = safe_filename(filename)
    model, ckpt = load(blob, name=name)  # raises CheckpointError; nothing is written
    check_views(model, ckpt, name)
    del model
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = name[: -len(".safetensors")]
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        for i in range(MAX_SAME_NAME):
            target = folder / (name if i == 0 else f"{stem}-{i}.safetensors")
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
            except OSError:  # no hard links here: exclusive creation, then the bytes
                try:
                    with open(target, "xb") as f:
                        f.write(blob)
                    return target
                except FileExistsError:
                    continue
        raise CheckpointError(f"{name}: {MAX_SAME_NAME} uploads of this name are stored "
                              "already; rename the file")
    finally:
        Path(tmp).unlink(missing_ok=True)


def list_checkpoints(*folders: str | os.PathLike, partial: bool = False) -> list[Checkpoint]:
    """Every ``*.safetensors`` in the folders with its metadata; unreadable ones (corrupt,
    foreign, not a regular file, a symlink loop) carry ``error`` instead of raising, so
    one bad entry never hides the others. Unfinished runs (``*.partial.safetensors``)
    are left out unless ``partial``."""
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
