"""Reading a user's uploaded image safely (no Streamlit here: tested on its own).

Bounds are checked before the pixels are decoded: the byte size, then the header's
width x height (Pillow reads it lazily), then the mode. Transparent images are laid on
white first, since drawings usually have a transparent background.
"""
from __future__ import annotations

import io

import numpy as np

MAX_BYTES = 2 * 2 ** 20          # 2 MiB: far more than a digit drawing needs
MAX_PIXELS = 2048 * 2048
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")  # what converts to grey without loss of meaning


class UploadError(ValueError):
    """An upload that is not a usable image; the message says why and what would do."""


def read_upload(data: bytes, name: str = "upload") -> np.ndarray:
    """Bytes of an image file -> greyscale uint8 array (H, W).

    Raises :class:`UploadError` for an empty, too large or unreadable file, too many
    pixels, or a mode (16-bit, float, CMYK, ...) outside :data:`MODES`.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > MAX_BYTES:
        raise UploadError(f"{name}: {len(data) / 2 ** 20:.1f} MiB is too large; the limit is "
                          f"{MAX_BYTES // 2 ** 20} MiB")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        raise UploadError(f"{name}: not an image Pillow can read ({exc.__class__.__name__}); "
                          "upload a PNG or JPEG") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise UploadError(f"{name}: {w} x {h} pixels is too large; the limit is "
                          f"{MAX_PIXELS:,} pixels (e.g. 2048 x 2048)")
    if w < 1 or h < 1:
        raise UploadError(f"{name}: the image has no pixels")
    if img.mode not in MODES:
        raise UploadError(f"{name}: image mode {img.mode!r} is not supported; save it as an "
                          f"8-bit greyscale or RGB(A) PNG (modes {', '.join(MODES)})")
    try:
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UploadError(f"{name}: the image data is corrupt or truncated ({exc})") from None
    if img.mode in ("LA", "PA", "RGBA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.uint8)
