"""Reading a user's uploaded image safely (no Streamlit here: tested on its own).

:func:`load_image_upload` is the one door: whatever the bytes, it returns a decoded
Pillow image or raises :class:`UploadError` with a message for the page, never another
exception. Bounds are checked before the pixels are decoded: the byte size, the format
(PNG or JPEG), a PNG's chunks (text metadata, whose compressed chunks can expand a
thousandfold, is bounded before Pillow inflates it), then the header's width x height and
aspect ratio (Pillow reads them lazily), then the mode. Transparent images are laid on
white, since drawings usually have a transparent background.
"""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np

MAX_BYTES = 2 * 2 ** 20          # 2 MiB: far more than a digit drawing needs
MAX_PIXELS = 2048 * 2048
MAX_ASPECT = 16                  # longest side / shortest side: a digit is not a strip
MAX_TEXT_BYTES = 16 * 2 ** 10    # all PNG text chunks together, as stored (zTXt inflates ~1000x)
MAX_CHUNKS = 4096                # a PNG's chunks (its pixels come in a few IDATs)
FORMATS = ("PNG", "JPEG")
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")  # what converts to grey without loss of meaning
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


class UploadError(ValueError):
    """An upload that is not a usable image; the message says why and what would do."""


def load_image_upload(data: bytes, name: str = "upload"):
    """Bytes of an uploaded image -> a decoded ``PIL.Image`` in mode ``L`` or ``RGB``
    (transparency laid on white).

    Raises :class:`UploadError` and nothing else: for an empty, too large, truncated or
    corrupt file, another format, a PNG with oversized text metadata, too many pixels,
    an extreme aspect ratio, or a mode (16-bit, float, CMYK, ...) outside :data:`MODES`.
    """
    try:
        return _load(bytes(data), name)
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's surprise is still a bad file
        raise UploadError(f"{name}: the image could not be read ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); upload a PNG or JPEG") from None


def read_upload(data: bytes, name: str = "upload") -> np.ndarray:
    """Bytes of an image file -> greyscale uint8 array (H, W); see :func:`load_image_upload`."""
    return np.asarray(load_image_upload(data, name).convert("L"), dtype=np.uint8)


def _load(data: bytes, name: str):
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > MAX_BYTES:
        raise UploadError(f"{name}: {len(data) / 2 ** 20:.1f} MiB is too large; the limit is "
                          f"{MAX_BYTES // 2 ** 20} MiB")
    if data.startswith(PNG_SIGNATURE):
        _check_png_chunks(data, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise UploadError(f"{name}: its header claims far too many pixels; the limit is "
                              f"{MAX_PIXELS:,} pixels (e.g. 2048 x 2048)") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise UploadError(f"{name}: not an image Pillow can read ({exc.__class__.__name__}); "
                              "upload a PNG or JPEG") from None
        _check_size(*img.size, name)
        if img.mode not in MODES:
            raise UploadError(f"{name}: image mode {img.mode!r} is not supported; save it as an "
                              f"8-bit greyscale or RGB(A) PNG (modes {', '.join(MODES)})")
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            raise UploadError(f"{name}: the image data is corrupt or truncated "
                              f"({str(exc)[:200]})") from None
    if img.mode in ("LA", "PA", "RGBA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("L" if img.mode in ("1", "L") else "RGB")


def _check_size(w: int, h: int, name: str) -> None:
    if w < 1 or h < 1:
        raise UploadError(f"{name}: the image has no pixels")
    if w * h > MAX_PIXELS:
        raise UploadError(f"{name}: {w} x {h} pixels is too large; the limit is "
                          f"{MAX_PIXELS:,} pixels (e.g. 2048 x 2048)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise UploadError(f"{name}: {w} x {h} pixels is too long and thin (at most "
                          f"{MAX_ASPECT}:1); crop it to the digit or garment")


def _check_png_chunks(data: bytes, name: str) -> None:
    """Walk a PNG's chunk headers (no decompression): bound their number and the text
    metadata, whose zTXt / iTXt chunks Pillow would inflate on open."""
    pos, chunks, text = len(PNG_SIGNATURE), 0, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise UploadError(f"{name}: a PNG of more than {MAX_CHUNKS} chunks; save it again "
                              "with an ordinary editor")
        if kind == b"IHDR" and length >= 8:  # the size, before Pillow sees the file
            _check_size(*struct.unpack(">II", data[pos + 8:pos + 16]), name)
        if kind in TEXT_CHUNKS:
            text += length
            if text > MAX_TEXT_BYTES:
                raise UploadError(f"{name}: the PNG carries more than {MAX_TEXT_BYTES // 1024} KiB "
                                  "of text metadata; save it again without metadata")
        if kind == b"IEND":
            return
        pos += 12 + length
