"""The checkpoint header's one declared schema, and the JSON parser that feeds it.

A checkpoint is untrusted input (an upload, a file someone copied into the runs folder), so
its header is checked whole before anything reads it: :func:`parse_json` refuses nesting
deeper than :data:`MAX_DEPTH` (no RecursionError), ``NaN`` / ``Infinity`` / overflowing
numbers and repeated keys; :data:`TENSOR_ENTRY` and :func:`meta_schema` say the type, range
and size of every field the library and the app read (epochs, metrics, history, optimizer
state, the TreeVAE topology in ``extra``, ...). :func:`check` raises :class:`HeaderError`
naming the field (``metrics.test_recon``, ``config.image_shape[1]``); a header that passes
can be read without another check. Cross-field rules (the dataset's image shape against the
config, the epochs against the history) and the model-size bounds live in ``checkpoints``,
which needs the model registry.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

import numpy as np

MAX_DEPTH = 16                 # the deepest legitimate header is 5 levels
MAX_EPOCHS = 1_000_000         # entries of the history lists
MAX_TREE_NODES = 511           # a depth-8 complete tree; growth makes 3 + 2 * splits
MAX_NAME = 512                 # tensor names, metric names, short strings
MAX_TEXT = 20_000              # free text: the command line, why a run stopped


class HeaderError(ValueError):
    """A header field of the wrong type, range or size; ``field`` names it."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field or 'header'}: {problem}")


# ----------------------------------------------------------------------------- JSON

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(raw: bytes) -> int:
    """How deeply ``raw``'s arrays and objects nest (strings ignored), without parsing:
    one vectorised pass, so a 16 MiB header of ``[[[[...`` costs milliseconds."""
    a = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    step = (np.isin(a, (0x5B, 0x7B)).astype(np.int32) - np.isin(a, (0x5D, 0x7D)))
    return int(np.cumsum(step).max(initial=0))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows a float")
    return value


def _no_repeats(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {key[:60]!r} appears twice")
    return out


def parse_json(raw: bytes | str, what: str) -> Any:
    """Strict JSON: HeaderError for invalid text, nesting deeper than MAX_DEPTH, NaN,
    Infinity, numbers past float range or 4300 digits, or a repeated key."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if json_depth(data) > MAX_DEPTH:
        raise HeaderError(what, f"nests deeper than {MAX_DEPTH} levels")
    try:
        text = data.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                          object_pairs_hook=_no_repeats)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HeaderError(what, f"not JSON ({exc})") from None


# ----------------------------------------------------------------------------- schema nodes
# Each node is a callable (value, field) -> None raising HeaderError; small enough to read
# as a declaration.

Check = Callable[[Any, str], None]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _type_name(v) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "true/false",
            type(None): "null", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def Int(lo: int, hi: int) -> Check:
    def check(v, where):
        if not _is_int(v):
            raise HeaderError(where, f"expected a whole number, got {_type_name(v)}")
        if not lo <= v <= hi:
            raise HeaderError(where, f"{v} is outside {lo}..{hi}")
    return check


def Num(lo: float = -1e308, hi: float = 1e308) -> Check:
    """A finite number (any JSON number the parser let through) in [lo, hi]."""
    def check(v, where):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise HeaderError(where, f"expected a number, got {_type_name(v)}")
        if (isinstance(v, float) and not math.isfinite(v)) or not lo <= v <= hi:
            raise HeaderError(where, f"{v!r} is outside {lo:g}..{hi:g}")
    return check


def Str(max_len: int = MAX_NAME, choices=None) -> Check:
    def check(v, where):
        if not isinstance(v, str):
            raise HeaderError(where, f"expected a string, got {_type_name(v)}")
        if len(v) > max_len:
            raise HeaderError(where, f"a string of {len(v)} characters (at most {max_len})")
        if choices is not None and v not in choices():
            raise HeaderError(where, f"{v[:60]!r} is not one of {', '.join(choices())}")
    return check


def Bool(v, where):
    if not isinstance(v, bool):
        raise HeaderError(where, f"expected true or false, got {_type_name(v)}")


def Const(value) -> Check:
    def check(v, where):
        if v != value or type(v) is not type(value):
            raise HeaderError(where, f"{v!r:.60} is not {value!r}")
    return check


def Opt(inner: Check) -> Check:
    def check(v, where):
        if v is not None:
            inner(v, where)
    return check


def Either(*options: Check, what: str) -> Check:
    def check(v, where):
        for option in options:
            try:
                return option(v, where)
            except HeaderError:
                continue
        raise HeaderError(where, f"expected {what}, got {_type_name(v)}")
    return check


def List(item: Check, max_len: int, min_len: int = 0) -> Check:
    def check(v, where):
        if not isinstance(v, list):
            raise HeaderError(where, f"expected a list, got {_type_name(v)}")
        if not min_len <= len(v) <= max_len:
            raise HeaderError(where, f"a list of {len(v)} entries (allowed {min_len}..{max_len})")
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
    return check


def Map(value: Check, max_items: int, key: Check = Str()) -> Check:
    """A table with free keys (metric names, history terms)."""
    def check(v, where):
        if not isinstance(v, dict):
            raise HeaderError(where, f"expected a table, got {_type_name(v)}")
        if len(v) > max_items:
            raise HeaderError(where, f"{len(v)} entries (at most {max_items})")
        for k, x in v.items():
            key(k, f"{where}.{k[:60]}")
            value(x, f"{where}.{k[:60]}")
    return check


def Table(fields: dict[str, Check], required=(), others: Check | None = None,
          max_items: int = 64) -> Check:
    """A table with declared keys; ``others`` checks undeclared ones (refused if None)."""
    def check(v, where):
        if not isinstance(v, dict):
            raise HeaderError(where, f"expected a table, got {_type_name(v)}")
        if len(v) > max_items:
            raise HeaderError(where, f"{len(v)} entries (at most {max_items})")
        for k in required:
            if k not in v:
                raise HeaderError(_join(where, k), "missing")
        for k, x in v.items():
            inner = fields.get(k, others)
            if inner is None:
                raise HeaderError(_join(where, k[:60]), "not a field this latentviz knows")
            inner(x, _join(where, k[:60]))
    return check


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check(value, schema: Check, where: str = "") -> None:
    """Validate ``value`` against ``schema``; HeaderError names the first bad field."""
    schema(value, where)


# ----------------------------------------------------------------------------- the header

SCALAR = Either(Num(), Str(MAX_TEXT), Bool, Const(None), what="a number, string, boolean or null")

#: one entry of the safetensors tensor table (shapes and offsets are cross-checked in
#: checkpoints.read_header: numel x itemsize = end - begin, contiguous, within the file).
TENSOR_ENTRY = Table({"dtype": Str(8), "shape": List(Int(0, 2 ** 31), max_len=8),
                      "data_offsets": List(Int(0, 2 ** 40), max_len=2, min_len=2)},
                     required=("dtype", "shape", "data_offsets"))

TERMS = Map(Num(), max_items=32)                       # {term: mean} of one epoch
HISTORY = Table({"train": List(TERMS, MAX_EPOCHS), "test": List(TERMS, MAX_EPOCHS),
                 "seconds": List(Num(0, 1e9), MAX_EPOCHS),
                 "stages": List(Str(64), MAX_EPOCHS), "stopped": Opt(Str(MAX_TEXT))},
                required=("train", "test", "seconds", "stages"))

MADE = Table({"command": Opt(Str(MAX_TEXT)), "device": Opt(Str()), "seconds": Opt(Num(0, 1e12)),
              "torch": Opt(Str()), "python": Opt(Str()), "host": Opt(Str()),
              "n_train": Opt(Int(2, 10 ** 9)), "when": Opt(Str()),
              "resumed_after_epochs": List(Int(0, MAX_EPOCHS), 10_000),
              "half_check": Map(SCALAR, 16)},
             others=SCALAR)

PARAM_GROUP = Table({"lr": Num(0, 10), "betas": List(Num(0, 1), 2, 2), "eps": Num(0, 1),
                     "weight_decay": Num(0, 1), "params": List(Int(0, 10 ** 6), 10 ** 6)},
                    required=("lr", "params"), others=SCALAR)
OPTIMIZER = Table({"param_groups": List(PARAM_GROUP, 64, 1),
                   "scalars": Map(Map(Num(0, 1e15), 8), 10 ** 6, key=Str(12))},
                  required=("param_groups", "scalars"))

TREE = Table({"version": Int(0, 1000), "next_id": Int(1, 2 ** 31),
              "nodes": List(Table({"id": Int(0, 2 ** 31), "parent": Opt(Int(0, 2 ** 31)),
                                   "depth": Int(0, 64),
                                   "children": List(Int(0, 2 ** 31), 2)},
                                  required=("id", "parent", "depth", "children")),
                            MAX_TREE_NODES, 1)},
             required=("version", "nodes"))
MASK = Table({"n": Int(0, 10 ** 7), "bits": Str(2 * 10 ** 6)}, required=("n", "bits"))  # 10M images
#: a stage cut off part-way (models/tree_growth.py checks the masks' lengths)
STAGE = Table({"name": Str(64), "epoch": Int(0, MAX_EPOCHS), "epochs": Int(0, MAX_EPOCHS),
               "focus": Opt(Int(0, 2 ** 31)), "train_mask": Opt(MASK), "test_mask": Opt(MASK)},
              required=("name", "epoch", "epochs"), others=SCALAR)
SCHEDULE = Table({"stages": Int(0, MAX_EPOCHS), "splits": Int(0, 10 ** 5),
                  "next": Str(16, choices=lambda: ("initial", "grow", "retrain", "final")),
                  "rng": List(Int(0, 255), 100_000), "stage": Opt(STAGE)},
                 required=("stages", "splits", "next", "rng"))
#: ``extra`` (LatentModel.extra_state) per variant; variants not named keep none.
EXTRA = {"treevae": Table({"tree": TREE, "schedule": Opt(SCHEDULE)}, required=())}
NO_EXTRA = Table({})


def config_schema(config_cls) -> Check:
    """The JSON types of a config dataclass's fields (ranges are the dataclass's own
    checks): int -> whole number, float -> number, bool, str, tuple -> list of whole
    numbers (``image_shape``, ``conv_channels``)."""
    import dataclasses

    kinds = {"int": Int(-2 ** 63, 2 ** 63 - 1), "float": Num(), "bool": Bool,
             "str": Str(64), "tuple": List(Int(0, 2 ** 20), 8)}
    fields = {}
    for f in dataclasses.fields(config_cls):
        name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        fields[f.name] = kinds.get(name, SCALAR)
    return Table(fields)


#: your own images (``data.load_path_dataset``): where, what shape, how many per class.
DATASET_SOURCE = Table({"path": Str(4096), "kind": Str(16), "image_size": Opt(Int(4, 512)),
                        "image_shape": List(Int(1, 4096), 3, 3), "split": Opt(Str(MAX_NAME)),
                        "images_per_class": Table({"train": List(Int(0, 10 ** 9), 10_000, 2),
                                                   "test": List(Int(0, 10 ** 9), 10_000, 2)},
                                                  required=("train", "test")),
                        "sha256": Str(64)},
                       required=("path", "image_shape", "images_per_class"), others=SCALAR)


def meta_schema(variants: Callable[[], Any], config_cls=None, train_cls=None,
                variant: str | None = None) -> Check:
    """The latentviz metadata document. ``config_cls`` / ``train_cls`` give the JSON types
    of the two configs (their ranges are checked by the dataclasses themselves); the
    dataset's name is checked against the registry with the image shape."""
    return Table({
        "format": Const("latentviz"), "format_version": Int(0, 10 ** 6),
        "library_version": Str(64), "variant": Str(64, choices=variants),
        "config": config_schema(config_cls) if config_cls else Map(SCALAR, 64),
        "dataset": Str(4096), "dataset_source": DATASET_SOURCE,
        "train_config": Opt(config_schema(train_cls) if train_cls else Map(SCALAR, 64)),
        "seed": Opt(Int(0, 2 ** 63 - 1)), "epochs": Int(0, MAX_EPOCHS),
        "history": Opt(HISTORY), "metrics": Map(Opt(Num()), 256), "made": MADE,
        "extra": EXTRA.get(variant, NO_EXTRA),
        "weights_dtype": Str(16, choices=lambda: ("float32", "float16")),
        "optimizer": Opt(OPTIMIZER),
    }, required=("format", "format_version", "variant", "config", "dataset", "epochs",
                 "metrics", "made", "extra", "weights_dtype"))
