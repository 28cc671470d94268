"""Reading and writing real photos for ``hidiff-deblur``.

Unlike the dataset decoder (:mod:`hidiff.data.image_io`), which only needs RGB
floats, a photo must come back out the way it went in:

* 8- and 16-bit PNG/TIFF, JPEG, BMP, WebP; the output has the input's bit depth;
* grayscale is processed as RGB and written back as gray (ITU-R 601 luma);
* an alpha channel is not restored: it is reattached to the output unchanged
  (8-bit gray + alpha stays two channels in PNG/TIFF; 16-bit gray + alpha is
  written as RGBA, since neither OpenCV nor Pillow writes it);
* EXIF orientation is applied on reading and the upright result is written;
* the EXIF block and ICC profile go back into JPEG, PNG and TIFF outputs, the
  orientation tag reset to 1 (the pixels are upright already, so no viewer
  turns them twice) and TIFF layout tags left out; a profile whose colour space
  does not fit the output (a CMYK profile on RGB pixels) is dropped.  16-bit
  TIFFs keep the EXIF main-IFD tags (Make, Model, DateTime, ...) but not its
  sub-IFDs (exposure, GPS): no writer at hand holds both 16-bit RGB and those;
* truncated or corrupt files raise :class:`DataError` with the path and reason, and so
  does a TIFF of several full-size pages (only the first would be decoded and written);
  reduced-resolution pages (thumbnails, NewSubfileType bit 0) are not counted.

Pixels are decoded by OpenCV (``IMREAD_UNCHANGED`` keeps 16 bits, which Pillow
drops for RGB); Pillow reads the EXIF orientation and the colour mode, and
catches truncated data that a decoder might otherwise pad silently.  Whether
OpenCV's decoder already turned a format upright differs between versions
(OpenCV 5 does for TIFF, not for JPEG/PNG/WebP), so it is probed once per format.
"""
from __future__ import annotations

import glob
import io
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import tifffile
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from hidiff.data.image_io import IMG_EXTENSIONS, is_image_file
from hidiff.data.orientation import EXIF_ORIENTATION as _EXIF_ORIENTATION
from hidiff.data.orientation import apply_orientation, opencv_applies_orientation
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger("hidiff.deblur")

_EXIF_SUB_IFDS = (0x8769, 0x8825, 0xA005)  # Exif, GPS, Interoperability pointers
# TIFF tags that describe one file's pixel layout (or carry blobs handled apart, such as the ICC profile):
# meaningless in another file, so they are not copied into the output's EXIF
_TIFF_LAYOUT_TAGS = {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323,
                     324, 325, 338, 339, 340, 341, 513, 514, 529, 530, 531, 532, 700, 33723, 34377, 34675}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "La"}
# Pillow modes with no alpha: a 4th channel from OpenCV is then colour (CMYK), not transparency
_OPAQUE_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "RGB", "CMYK", "YCbCr", "LAB", "HSV"}
_MAX_BY_DTYPE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# output formats, and those that hold 16-bit samples (OpenCV saturates 16 bits into the others)
WRITABLE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".pnm")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
NO_ALPHA_EXTENSIONS = (".jpg", ".jpeg", ".ppm", ".pgm", ".pnm")


@dataclass
class Photo:
    """A decoded photo: upright RGB float32 pixels plus what is needed to write it back."""

    rgb: np.ndarray              # H x W x 3 float32 in [0, 1], EXIF orientation applied
    alpha: Optional[np.ndarray]  # H x W in the file's sample type, oriented like rgb; None if absent
    dtype: np.dtype              # sample type in the file: uint8 or uint16
    gray: bool                   # the file stores one colour channel
    orientation: int             # EXIF orientation tag that was applied (1 = none)
    path: Path
    exif: Optional[bytes] = None         # EXIF block to write back (orientation 1, layout tags removed)
    icc_profile: Optional[bytes] = None  # the embedded ICC colour profile

    @property
    def bit_depth(self) -> int:
        return 16 if self.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


# ------------------------------------------------------------------ reading
def read_photo(path: PathLike) -> Photo:
    """Decode a photo file; any failure is a DataError naming the file and the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if not data:
        raise DataError(f"cannot read '{path}': the file is empty")
    orientation, mode, fmt, exif, icc = _check_with_pillow(data, path)
    raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"cannot decode '{path}': corrupt data or an unsupported format")
    if raw.dtype not in _MAX_BY_DTYPE:
        raise DataError(f"cannot process '{path}': {raw.dtype} samples are not supported "
                        f"(expected 8- or 16-bit integers)")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim == 2:
        color, alpha = np.repeat(raw[:, :, None], 3, axis=2), None
    elif raw.shape[2] in (3, 4):
        color = raw[:, :, 2::-1]  # BGR -> RGB
        alpha = raw[:, :, 3] if raw.shape[2] == 4 and mode not in _OPAQUE_MODES else None
    else:
        raise DataError(f"cannot process '{path}': {raw.shape[2]} channels (expected 1, 3 or 4)")
    if not opencv_applies_orientation(fmt):
        color = apply_orientation(color, orientation)
        alpha = apply_orientation(alpha, orientation) if alpha is not None else None
    rgb = np.ascontiguousarray(color, dtype=np.float32) / _MAX_BY_DTYPE[raw.dtype]
    gray = raw.ndim == 2 or mode in _GRAY_MODES
    return Photo(rgb, None if alpha is None else np.ascontiguousarray(alpha), raw.dtype, gray,
                 orientation, path, exif, icc)


def _check_with_pillow(data: bytes, path: Path):
    """(EXIF orientation, Pillow mode, Pillow format, EXIF to write back, ICC profile).

    Raises DataError for truncated/corrupt files.  Files Pillow cannot identify
    (a format only OpenCV reads) are left to OpenCV.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, fmt = im.mode, im.format
            icc = im.info.get("icc_profile") or None
            orientation, upright_exif = 1, None
            try:  # a broken EXIF block should not make the pixels unusable
                exif = im.getexif()
                orientation = int(exif.get(_EXIF_ORIENTATION, 1))
                upright_exif = _upright_exif(exif)
            except Exception as exc:
                log.warning("%s: EXIF not kept (%s)", path, exc)
            im.load()
            pages = _full_size_pages(im) if fmt == "TIFF" else 1
    except UnidentifiedImageError:
        return 1, None, None, None, None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode '{path}': {exc}") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"refusing '{path}': {exc}") from None
    if pages > 1:
        raise DataError(f"cannot process '{path}': a multi-page TIFF of {pages} pages; only single images are "
                        f"deblurred (split the pages into files first)")
    return (orientation if orientation in range(1, 9) else 1), mode, fmt, upright_exif, icc


def _full_size_pages(im: Image.Image) -> int:
    """The pages of an open TIFF that are not reduced-resolution copies (NewSubfileType bit 0)."""
    n = getattr(im, "n_frames", 1)
    if n == 1:
        return 1
    full = 0
    try:
        for i in range(n):
            im.seek(i)
            full += not int(im.tag_v2.get(254, 0)) & 1
    except EOFError:  # a page chain cut short: the pages read so far
        pass
    return max(full, 1)


def _upright_exif(exif: Image.Exif) -> Optional[bytes]:
    """The EXIF block of upright pixels: orientation 1, this file's layout tags removed; None if empty."""
    for tag in list(exif):
        if tag in _TIFF_LAYOUT_TAGS:
            del exif[tag]
    if not len(exif):
        return None
    if _EXIF_ORIENTATION in exif:
        exif[_EXIF_ORIENTATION] = 1
    return exif.tobytes()  # reads the Exif/GPS sub-IFDs while the file is open


# ------------------------------------------------------------------ writing
def output_suffix(ext: str) -> str:
    """An extension as written by users ('PNG', '.tif') as a lower-case suffix ('.png', '.tif')."""
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def check_writable(like: Photo, ext: str) -> str:
    """The output suffix for ``ext``; DataError if a result like ``like`` cannot be kept in it (bit depth, alpha).

    Callers check before restoring: the restoration of a large photo takes minutes."""
    ext = output_suffix(ext)
    if ext not in WRITABLE_EXTENSIONS:
        raise DataError(f"cannot write '{ext}' files (for '{like.path}'); expected one of "
                        f"{', '.join(WRITABLE_EXTENSIONS)}")
    if ext not in SIXTEEN_BIT_EXTENSIONS and like.dtype != np.uint8:
        raise DataError(f"cannot write a {like.bit_depth}-bit result as '{ext}' for '{like.path}'; "
                        f"choose .png or .tif to keep 16 bits")
    if like.alpha is not None and ext in NO_ALPHA_EXTENSIONS:
        raise DataError(f"cannot keep the alpha channel of '{like.path}' in a '{ext}' file")
    return ext


def encode_photo(rgb: np.ndarray, like: Photo, ext: str) -> bytes:
    """Encode restored RGB floats the way ``like`` was stored (bit depth, gray, alpha)."""
    ext = check_writable(like, ext)
    dtype = like.dtype
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[:2] != like.size or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"result of shape {rgb.shape} does not fit '{like.path}' ({like.size[0]}x{like.size[1]})")
    if like.gray:
        pixels = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        pixels = rgb[:, :, ::-1]  # RGB -> BGR for OpenCV
    pixels = quantize(pixels, dtype)
    exif, icc = like.exif, _fitting_profile(like.icc_profile, gray=like.gray)
    if like.alpha is not None:
        if pixels.ndim == 2 and dtype == np.uint8 and ext in (".png", ".tif", ".tiff"):
            return _encode_gray_alpha(pixels, like.alpha, ext, exif, icc)
        colour = pixels[:, :, None] if pixels.ndim == 2 else pixels
        if pixels.ndim == 2:
            colour = np.repeat(colour, 3, axis=2)  # OpenCV writes 2 channels only via 4
            icc = _fitting_profile(like.icc_profile, gray=False)
        pixels = np.concatenate([colour, like.alpha[:, :, None].astype(dtype)], axis=2)
    if ext in (".tif", ".tiff") and (exif or icc):
        return _encode_tiff_with_metadata(pixels, exif, icc)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(pixels), params)
    if not ok:
        raise DataError(f"encoding the result of '{like.path}' as '{ext}' failed")
    if ext in (".jpg", ".jpeg"):
        return _jpeg_with_metadata(buf.tobytes(), exif, icc)
    if ext == ".png":
        return _png_with_metadata(buf.tobytes(), exif, icc)
    return buf.tobytes()


def _encode_gray_alpha(gray: np.ndarray, alpha: np.ndarray, ext: str, exif: Optional[bytes],
                       icc: Optional[bytes]) -> bytes:
    """8-bit gray + alpha as a two-channel (Pillow "LA") PNG or TIFF; OpenCV writes 1, 3 or 4 channels only."""
    im = Image.fromarray(np.ascontiguousarray(np.stack([gray, alpha.astype(np.uint8)], axis=2)))  # -> mode LA
    buf = io.BytesIO()
    extra = {"compression": "tiff_deflate"} if ext != ".png" and not exif else {}  # see _encode_tiff_with_metadata
    extra.update({k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v})
    im.save(buf, "PNG" if ext == ".png" else "TIFF", **extra)
    return buf.getvalue()


# ------------------------------------------------------- metadata writing
def _fitting_profile(icc: Optional[bytes], gray: bool) -> Optional[bytes]:
    """``icc`` if its colour space (ICC header bytes 16-19) is the one written, else None."""
    if not icc or len(icc) < 20:
        return None
    return icc if icc[16:20] == (b"GRAY" if gray else b"RGB ") else None


def _jpeg_with_metadata(jpeg: bytes, exif: Optional[bytes], icc: Optional[bytes]) -> bytes:
    """Insert an APP1 EXIF segment and APP2 ICC_PROFILE segments after SOI and the JFIF APP0 segment."""
    segments = []
    if exif:
        if len(exif) + 2 <= 0xFFFF:
            segments.append(b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif)
        else:
            log.warning("EXIF block of %d bytes does not fit a JPEG segment; not written", len(exif))
    if icc:
        chunks = [icc[i:i + 65519] for i in range(0, len(icc), 65519)]
        for n, chunk in enumerate(chunks, 1):
            body = b"ICC_PROFILE\0" + bytes([n, len(chunks)]) + chunk
            segments.append(b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body)
    if not segments:
        return jpeg
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:at] + b"".join(segments) + jpeg[at:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_metadata(png: bytes, exif: Optional[bytes], icc: Optional[bytes]) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (both must precede the image data)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    if not chunks:
        return png
    at = 8 + 12 + struct.unpack(">I", png[8:12])[0]  # signature, then IHDR (length, type, data, crc)
    return png[:at] + chunks + png[at:]


def _encode_tiff_with_metadata(pixels: np.ndarray, exif: Optional[bytes], icc: Optional[bytes]) -> bytes:
    """A TIFF with the EXIF and ICC profile: Pillow for 8 bits, tifffile for 16 (see module doc).

    ``pixels`` are OpenCV-ordered (gray, BGR or BGRA).  Pillow compresses
    TIFFs through libtiff, which refuses the EXIF sub-IFD pointer, so 8-bit
    files with EXIF are written uncompressed by Pillow's own writer.
    """
    if pixels.ndim == 3:
        pixels = np.concatenate([pixels[:, :, 2::-1], pixels[:, :, 3:]], axis=2)  # -> RGB(A)
    pixels = np.ascontiguousarray(pixels)
    buf = io.BytesIO()
    if pixels.dtype == np.uint8:
        extra = {k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v}
        Image.fromarray(pixels).save(buf, "TIFF", **({} if exif else {"compression": "tiff_adobe_deflate"}), **extra)
        return buf.getvalue()
    tags = [(34675, "B", len(icc), icc, True)] if icc else []
    if exif:
        main = Image.Exif()
        main.load(exif)
        for tag, value in sorted(main.items()):
            if tag in _EXIF_SUB_IFDS or tag in (282, 283, 296):  # tifffile writes the resolution itself
                continue
            if isinstance(value, str):
                tags.append((tag, "s", 0, value, True))
            elif isinstance(value, int) and 0 <= value < 1 << 32:
                tags.append((tag, "H" if value < 1 << 16 else "I", 1, value, True))
    rgb = pixels.ndim == 3
    tifffile.imwrite(buf, pixels, photometric="rgb" if rgb else "minisblack", compression="zlib",
                     extrasamples=("unassalpha",) if rgb and pixels.shape[2] == 4 else None,
                     metadata=None, software=False, extratags=tags)
    return buf.getvalue()


def write_photo(path: PathLike, rgb: np.ndarray, like: Photo) -> None:
    """Atomically write restored RGB floats in the format of ``path``'s extension (its folder created)."""
    data = encode_photo(rgb, like, Path(path).suffix or ".png")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def quantize(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Clip to [0, 1], scale to the integer range of ``dtype`` and round."""
    top = _MAX_BY_DTYPE[np.dtype(dtype)]
    return np.rint(np.clip(img, 0.0, 1.0) * top).astype(dtype)


# --------------------------------------------------------- tensors, listing
def to_tensor(rgb: np.ndarray) -> Tensor:
    """H x W x 3 float array -> (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]


def from_tensor(t: Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor -> H x W x 3 float32 array (not clipped)."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    return t.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()


def find_photos(spec: PathLike) -> list[Path]:
    """The image files named by a file, a folder (not recursive) or a glob pattern, sorted.

    Raises DataError if nothing matches, naming the pattern.
    """
    text = str(spec)
    p = Path(text)
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                       and is_image_file(q.name))
        if not found:
            raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) in folder '{p}'")
        return found
    if p.is_file():
        return [p]
    if glob.has_magic(text):
        found = sorted(Path(q) for q in glob.glob(text) if Path(q).is_file() and is_image_file(q))
        if not found:
            raise DataError(f"no image files match '{text}'")
        return found
    raise DataError(f"input '{text}' does not exist")


def walk_photos(folder: PathLike, exclude: Optional[PathLike] = None
                ) -> tuple[list[Path], list[tuple[Path, str]], list[tuple[Path, str]]]:
    """``(photos, skipped, unreadable)`` of a folder tree, each sorted by path.

    ``skipped``: entries that are not photos (other files, hidden entries,
    links to folders, which are not followed, and the folder ``exclude``, so an
    output folder inside the tree is never read back); ``unreadable``: folders
    that cannot be listed and links that lead nowhere, each with the reason.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"input '{root}' is not a folder")
    skip_dir = Path(exclude).resolve() if exclude is not None else None
    photos: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    unreadable: list[tuple[Path, str]] = []

    def cannot_list(exc: OSError) -> None:
        unreadable.append((Path(exc.filename), f"cannot read the folder ({exc.strerror or exc})"))

    for here, dirs, files in os.walk(root, onerror=cannot_list):
        base = Path(here)
        for d in list(dirs):
            p = base / d
            reason = ("hidden" if d.startswith(".") else "a link to a folder (not followed)" if p.is_symlink()
                      else "the output folder" if skip_dir is not None and p.resolve() == skip_dir else None)
            if reason:
                dirs.remove(d)
                skipped.append((p, reason))
        dirs.sort()
        for f in files:
            p = base / f
            if f.startswith("."):
                skipped.append((p, "hidden"))
            elif not p.exists():
                unreadable.append((p, "a link that leads nowhere"))
            elif not p.is_file():
                skipped.append((p, "not a regular file"))
            elif is_image_file(f):
                photos.append(p)
            else:
                skipped.append((p, f"not an image ({', '.join(IMG_EXTENSIONS)})"))
    return sorted(photos), sorted(skipped), sorted(unreadable)
