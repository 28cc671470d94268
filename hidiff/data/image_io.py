"""Image files and arrays: decoding, quantising and writing.

Datasets read one image per item (never a whole folder into RAM) as RGB float32
in [0, 1]: 8-bit images are scaled by 1/255 and 16-bit ones (DPDD) by 1/65535;
gray images are expanded to 3 channels and alpha is dropped.  Scoring reads
results and ground truth with :func:`read_rgb`, which keeps the stored uint8 or
uint16 values (metrics on 8-bit images must see them exactly) and refuses alpha.
Every failure raises :class:`DataError` naming the file and the reason, instead
of OpenCV's silent ``None``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image

from hidiff.data.orientation import header_orientation, upright
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WEBP",
}


def is_image_file(name: PathLike) -> bool:
    """True if the file name has one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return str(name).lower().endswith(IMG_EXTENSIONS)


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image extension (case-insensitive)."""
    return not name.startswith(".") and is_image_file(name)


def list_images(folder: PathLike) -> list[Path]:
    """The image files directly inside ``folder`` (not recursive), sorted by name.

    Hidden files (``.name``) are ignored.  A missing folder is a DataError.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a folder")
    return sorted(p for p in root.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_image_file(p.name))


def _format_of(data: bytes) -> str | None:
    for magic, fmt in _SIGNATURES.items():
        if data.startswith(magic):
            return fmt
    return None


def decode_raw(data: bytes, source: str) -> np.ndarray:
    """Decode ``data`` with OpenCV unchanged (BGR/BGRA/gray, 8/16-bit), turned upright by its EXIF orientation
    (hidiff/data/orientation.py), or raise DataError.

    ``source`` (a path or an LMDB key) is only used in error messages.
    """
    if len(data) == 0:
        raise DataError(f"cannot read image '{source}': the file is empty")
    raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        fmt = _format_of(data)
        reason = (f"truncated or corrupt {fmt} data ({len(data)} bytes)" if fmt
                  else f"not a supported image format (first bytes {data[:8]!r})")
        raise DataError(f"cannot decode image '{source}': {reason}")
    return upright(raw, data)


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Decode encoded image ``data`` to an HxWx3 RGB float32 array in [0, 1]."""
    return to_rgb_float(decode_raw(data, source), source)


def to_rgb_float(raw: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Convert an OpenCV-decoded array (BGR/BGRA/gray, uint8/uint16/float) to RGB float32."""
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    elif raw.dtype in (np.float32, np.float64):
        img = raw.astype(np.float32)
    else:
        raise DataError(f"image '{source}': unsupported pixel type {raw.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels in (3, 4):
        return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped
    raise DataError(f"image '{source}': expected 1, 3 or 4 channels, got {channels}")


def read_bytes(path: PathLike) -> bytes:
    """Read a file's bytes; a missing or unreadable file is a DataError naming it."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"image file '{path}' does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read image file '{path}': {exc.strerror or exc}") from None


def read_raw(path: PathLike) -> np.ndarray:
    """Read an image file as OpenCV decodes it (channel order and bit depth untouched)."""
    return decode_raw(read_bytes(path), str(path))


def read_rgb(path: PathLike) -> np.ndarray:
    """HxWx3 RGB uint8/uint16 array of an image file, upright by its EXIF orientation; DataError names the file
    on failure."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image '{p}': {exc.strerror or exc}") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"cannot decode image '{p}' (empty, truncated or not an image)")
    img = upright(img, data.tobytes())
    if img.dtype not in (np.uint8, np.uint16):
        raise DataError(f"image '{p}': unsupported pixel type {img.dtype} (expected 8 or 16 bit)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1])
    raise DataError(f"image '{p}' has {img.shape[2]} channels; expected gray or RGB (no alpha)")


def stored_size(path: PathLike) -> Optional[Tuple[int, int]]:
    """(height, width) of an image file as it is read (upright by its EXIF orientation), from its header alone;
    None where the header cannot be read (the full read then says why)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.format == "TIFF":   # the stored size (Pillow may report it turned already)
                w, h = int(im.tag_v2.get(256, w)), int(im.tag_v2.get(257, h))
            orientation = header_orientation(im)
    except Exception:   # any unreadable header: the decode that follows names the file and the reason
        return None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as HxWx3 RGB float32 in [0, 1]; DataError names path and reason."""
    return decode_image(read_bytes(path), str(path))


def read_image_uint8(path: PathLike) -> np.ndarray:
    """Read an image file as HxWx3 RGB uint8 (16-bit images are rounded to 8 bits)."""
    return float_to_uint8(read_image(path))


def shrink_to(img: np.ndarray, side: int, *, short: bool = False) -> np.ndarray:
    """``img`` with its longest side (its shortest with ``short``) at most ``side`` px; area resampling."""
    scale = side / (min(img.shape[:2]) if short else max(img.shape[:2]))
    if scale >= 1:
        return img
    size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def float_to_uint8(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to uint8 (round-half-to-even, as numpy does)."""
    return np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) or (3,H,W) float [0,1] -> HxWx3 uint8 RGB (clamp, x255, round), as BasicSR's tensor2img."""
    if img.dim() == 4:
        img = img[0]
    arr = img.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def to_uint16(img: torch.Tensor) -> np.ndarray:
    """Like ``to_uint8`` with 16-bit precision (DPDD is scored on 16-bit images, as Restormer does)."""
    if img.dim() == 4:
        img = img[0]
    arr = img.detach().double().clamp(0, 1).mul(65535.0).round().cpu().numpy().astype(np.uint16)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def encode_png(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode an HxWx3 RGB (or HxW gray) uint8/uint16 array as PNG bytes."""
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    return encode_png_raw(arr, compress_level)


def encode_png_raw(arr: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode an array in OpenCV channel order (as :func:`read_raw` gives it) as PNG bytes."""
    if arr.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG encoding needs uint8 or uint16 pixels, got {arr.dtype}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise DataError(f"PNG encoding failed for an array of shape {arr.shape}")
    return buf.tobytes()


def write_png(path: PathLike, rgb: np.ndarray, compress_level: int = 1) -> None:
    """Atomically write an RGB uint8/uint16 array as a PNG file."""
    atomic_write_bytes(path, encode_png(rgb, compress_level))
