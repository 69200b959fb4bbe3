"""Malformed checkpoints, from disk or upload: each gives a clear CheckpointError;
nothing is executed, nothing crashes, nothing is written."""
from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch

import latentviz as lv
from latentviz.checkpoints import MAX_FILE_BYTES, CheckpointError, safe_filename, store_upload

MARKER = "/tmp/latentviz-fuzz-pickle-ran"


class Payload:
    """Unpickling this would create MARKER: proof that a loader executed the file."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _parts(blob: bytes):
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _with_meta(blob, **changes):
    header, data = _parts(blob)
    meta = json.loads(header["__metadata__"]["latentviz"])
    for k, v in changes.items():
        if k == "config":
            meta["config"].update(v)
        else:
            meta[k] = v
    header["__metadata__"]["latentviz"] = json.dumps(meta)
    return _join(header, data)


def _with_tensor(blob, name, **entry):
    header, data = _parts(blob)
    header[name].update(entry)
    return _join(header, data)


def _without_tensor(blob, name):
    header, data = _parts(blob)
    del header[name]
    return _join(header, data)


def _nan_weights(blob):
    model, _ = lv.load(blob)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    import safetensors.torch as st
    header, _ = _parts(blob)
    return st.save({k: v.contiguous() for k, v in model.state_dict().items()},
                   metadata=header["__metadata__"])


def _cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, what the message must say)."""
    header, data = _parts(good)
    first = next(k for k in header if k != "__metadata__")
    return {
        "empty": (b"", "empty or truncated"),
        "four bytes": (b"\x01\x02\x03\x04", "empty or truncated"),
        "random bytes": (os.urandom(4096), "not a safetensors checkpoint"),
        "huge header claim": (struct.pack("<Q", 2 ** 62) + b"{}" * 8, "header claims"),
        "header longer than file": (struct.pack("<Q", 500) + b"{}", "header claims"),
        "header not json": (struct.pack("<Q", 7) + b"garbage", "not JSON"),
        "header a list": (_join([], b"") if False else struct.pack("<Q", 2) + b"[]", "not a table"),
        "foreign safetensors": (_join({k: v for k, v in header.items() if k != "__metadata__"}, data),
                                "not a latentviz checkpoint"),
        "metadata not json": (_join({**header, "__metadata__": {"latentviz": "{oops"}}, data),
                              "not valid JSON"),
        "wrong format": (_with_meta(good, format="other"), "does not describe a latentviz"),
        "future version": (_with_meta(good, format_version=99), "format version 99"),
        "unknown variant": (_with_meta(good, variant="gan"), "variant"),
        "invalid config": (_with_meta(good, config={"latent_dim": -3}), "latent_dim"),
        "unknown config field": (_with_meta(good, config={"exec": "rm -rf /"}), "exec"),
        "json lies about shapes": (_with_meta(good, config={"latent_dim": 7}), "shape"),
        "tensor shape lies": (_with_tensor(good, first, shape=[3, 3]), "shape"),
        "unsupported dtype": (_with_tensor(good, first, dtype="I8"), "unsupported dtype"),
        "offsets past the end": (_with_tensor(good, first, data_offsets=[0, 10 ** 9]), "truncated"),
        "truncated data": (good[: len(good) - 100], "truncated"),
        "missing tensor": (_without_tensor(good, first), "missing"),
        "nan weights": (_nan_weights(good), "NaN"),
        "pickle renamed": (pickle.dumps(Payload()), "not a safetensors"),
        "torch.save file": (_torch_save_bytes(), "not a safetensors"),
        "json file": (json.dumps({"variant": "vae"}).encode(), "not a safetensors"),
    }


def _torch_save_bytes() -> bytes:
    import io
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2), "evil": Payload()}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good(digits, tmp_path_factory) -> bytes:
    from conftest import TINY_TRAIN, tiny_model
    model = tiny_model("vae", digits)
    lv.fit(model, digits, TINY_TRAIN.replace(epochs=1))
    path = tmp_path_factory.mktemp("fuzz") / "good.safetensors"
    return lv.save(path, model, dataset="digits", train_config=TINY_TRAIN).read_bytes()


def test_at_least_twenty_malformed_inputs_each_get_a_clear_error(good, tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    cases = _cases(good)
    assert len(cases) >= 20
    failures = []
    for name, (blob, says) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        path.write_bytes(blob)
        for source in (path, blob):  # from disk, and as an upload
            try:
                lv.load(source)
                failures.append(f"{name}: loaded without error")
            except CheckpointError as exc:
                if says.lower() not in str(exc).lower():
                    failures.append(f"{name}: message {str(exc)!r} lacks {says!r}")
            except Exception as exc:  # noqa: BLE001 - anything else is a crash
                failures.append(f"{name}: crashed with {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    assert not os.path.exists(MARKER), "a pickle payload was executed"


def test_the_good_file_still_loads(good):
    model, ckpt = lv.load(good)
    assert ckpt.variant == "vae"


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd.safetensors", "passwd.safetensors"),
    ("/abs/path/model.safetensors", "model.safetensors"),
    ("..\\..\\win.safetensors", "win.safetensors"),
    ("..", "upload.safetensors"),
    ("weird name;rm -rf.safetensors", "weird_name_rm_-rf.safetensors"),
    ("model.pkl", "model.pkl.safetensors"),
])
def test_upload_names_cannot_leave_the_folder(name, expected):
    assert safe_filename(name) == expected


def test_a_good_upload_is_stored_without_overwriting(good, tmp_path):
    a = store_upload(good, "../../mine.safetensors", tmp_path)
    b = store_upload(good, "mine.safetensors", tmp_path)
    assert a.parent == tmp_path and b.parent == tmp_path and a != b
    assert lv.load(b)[1].variant == "vae"


def test_a_bad_upload_writes_nothing(tmp_path):
    with pytest.raises(CheckpointError):
        store_upload(pickle.dumps(Payload()), "evil.safetensors", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_uploads_larger_than_the_bound_are_refused_before_parsing():
    with pytest.raises(CheckpointError, match="larger than"):
        lv.load(b"\0" * (MAX_FILE_BYTES + 1))
