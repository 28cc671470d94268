"""Photo I/O for the deblur command: bit depth, gray, alpha, EXIF orientation, corrupt files."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
from PIL import Image, ImageOps

from hidiff.errors import DataError
from hidiff.inference.image_io import (apply_orientation, encode_photo, find_photos, from_tensor, quantize,
                                       read_photo, to_tensor, write_photo)

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """A real photo (RGB uint8), cropped small."""
    return np.asarray(Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB"))[:60, :80].copy()


def test_16bit_png_round_trip_is_lossless(tmp_path, chelsea):
    rng = np.random.default_rng(0)
    img16 = chelsea.astype(np.uint16) * 257 + rng.integers(0, 257, chelsea.shape, dtype=np.uint16)
    src = tmp_path / "in16.png"
    cv2.imwrite(str(src), img16[:, :, ::-1])
    photo = read_photo(src)
    assert photo.dtype == np.uint16 and photo.bit_depth == 16 and not photo.gray and photo.alpha is None
    np.testing.assert_array_equal(photo.rgb, img16.astype(np.float32) / 65535)
    out = tmp_path / "out16.png"
    write_photo(out, photo.rgb, photo)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, ::-1], img16)


def test_16bit_tiff_and_jpeg_refusal(tmp_path, chelsea):
    img16 = chelsea.astype(np.uint16) * 257
    src = tmp_path / "in.tif"
    cv2.imwrite(str(src), img16[:, :, ::-1])
    photo = read_photo(src)
    assert photo.bit_depth == 16
    write_photo(tmp_path / "out.tif", photo.rgb, photo)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.tif"), cv2.IMREAD_UNCHANGED)[:, :, ::-1], img16)
    with pytest.raises(DataError, match="16-bit.*png"):
        encode_photo(photo.rgb, photo, ".jpg")


def test_gray_jpeg_is_processed_as_rgb_and_written_gray(tmp_path, chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    src = tmp_path / "gray.jpg"
    Image.fromarray(gray).save(src, quality=95)
    photo = read_photo(src)
    assert photo.gray and photo.rgb.shape == gray.shape + (3,)
    assert np.array_equal(photo.rgb[..., 0], photo.rgb[..., 1]) and np.array_equal(photo.rgb[..., 0], photo.rgb[..., 2])
    out = tmp_path / "gray_out.png"
    write_photo(out, photo.rgb, photo)
    back = np.asarray(Image.open(out))
    assert Image.open(out).mode == "L" and back.shape == gray.shape
    np.testing.assert_array_equal(back, np.rint(photo.rgb[..., 0] * 255).astype(np.uint8))


def test_rgba_alpha_is_kept_unchanged(tmp_path, chelsea):
    alpha = np.tile(np.linspace(0, 255, chelsea.shape[1]).astype(np.uint8), (chelsea.shape[0], 1))
    src = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([chelsea, alpha]), "RGBA").save(src)
    photo = read_photo(src)
    np.testing.assert_array_equal(photo.alpha, alpha)
    np.testing.assert_array_equal(quantize(photo.rgb, np.uint8), chelsea)
    out = tmp_path / "rgba_out.png"
    write_photo(out, 1.0 - photo.rgb, photo)  # any "restored" colours: alpha must still be the input's
    back = Image.open(out)
    assert back.mode == "RGBA"
    arr = np.asarray(back)
    np.testing.assert_array_equal(arr[..., 3], alpha)
    np.testing.assert_array_equal(arr[..., :3], 255 - chelsea)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, chelsea, orientation):
    """Pillow's exif_transpose is the independent reference for all 8 orientations."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / f"o{orientation}.png"
    Image.fromarray(chelsea).save(src, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src)).convert("RGB"))
    photo = read_photo(src)
    assert photo.orientation == orientation
    np.testing.assert_array_equal(quantize(photo.rgb, np.uint8), expected)
    out = tmp_path / f"o{orientation}_out.png"
    write_photo(out, photo.rgb, photo)
    written = Image.open(out)
    assert written.getexif().get(0x0112, 1) == 1  # upright, no tag left to re-apply
    np.testing.assert_array_equal(np.asarray(written), expected)


def test_exif_rotated_jpeg_is_read_upright(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    src = tmp_path / "rot.jpg"
    Image.fromarray(chelsea).save(src, exif=exif, quality=95)
    photo = read_photo(src)
    assert photo.size == (chelsea.shape[1], chelsea.shape[0])
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src)).convert("RGB")).astype(np.float32)
    assert np.abs(photo.rgb * 255 - expected).mean() < 2.0  # two JPEG decoders, same picture


def test_apply_orientation_is_inverted_by_its_transpose_group():
    a = np.arange(12).reshape(3, 4)
    assert apply_orientation(a, 6).shape == (4, 3)
    np.testing.assert_array_equal(apply_orientation(a, 6), np.rot90(a, -1))
    np.testing.assert_array_equal(apply_orientation(a, 8), np.rot90(a, 1))


@pytest.mark.parametrize("ext,saver", [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".webp", "WEBP")])
def test_training_evaluation_and_deblur_read_a_tagged_photo_alike(tmp_path, chelsea, ext, saver):
    """OpenCV applied the EXIF orientation to TIFF but not to JPEG/PNG: a dataset read a tagged JPEG sideways
    while hidiff-deblur turned it upright, and a perfect restoration scored 7.9 dB against its own target."""
    from hidiff.data.image_io import read_image_uint8, read_raw, read_rgb
    from hidiff.metrics.psnr import psnr_uint8

    src = tmp_path / f"tagged{ext}"
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6                                         # stored sideways: turn 90 degrees clockwise
    if saver == "TIFF":
        Image.fromarray(chelsea).save(src, saver, tiffinfo={0x0112: 6})
    else:
        Image.fromarray(chelsea).save(src, saver, exif=exif.tobytes(), **({} if saver == "PNG" else {"quality": 100}))
    h, w = chelsea.shape[:2]
    photo = np.clip(np.rint(read_photo(src).rgb * 255), 0, 255).astype(np.uint8)
    for image in (photo, read_image_uint8(src), read_rgb(src), read_raw(src)[:, :, ::-1]):
        assert image.shape == (w, h, 3)
        np.testing.assert_array_equal(image, photo)
    if saver == "PNG":                                     # lossless: upright is the stored pixels turned
        np.testing.assert_array_equal(photo, np.rot90(chelsea, -1))
    assert psnr_uint8(read_rgb(src), photo) == float("inf")
    plain = tmp_path / f"plain{ext}"
    Image.fromarray(chelsea).save(plain, saver)               # untagged: as stored
    assert read_rgb(plain).shape == (h, w, 3)


@pytest.mark.parametrize("ext,saver", [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF")])
def test_truncated_files_are_reported_with_path(tmp_path, chelsea, ext, saver):
    good = tmp_path / f"good{ext}"
    Image.fromarray(chelsea).save(good, saver)
    data = good.read_bytes()
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"bad\.(png|jpg|tif)"):
        read_photo(bad)


def test_garbage_empty_and_missing_files(tmp_path):
    (tmp_path / "notes.png").write_bytes(b"this is not an image at all" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="notes.png"):
        read_photo(tmp_path / "notes.png")
    with pytest.raises(DataError, match="empty.jpg.*empty"):
        read_photo(tmp_path / "empty.jpg")
    with pytest.raises(DataError, match="missing.png"):
        read_photo(tmp_path / "missing.png")


def test_find_photos_file_folder_glob(tmp_path, chelsea):
    for name in ("b.png", "a.JPG", "c.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in find_photos(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in find_photos(str(tmp_path / "*.png"))] == ["b.png"]
    assert [p.name for p in find_photos(str(tmp_path / "**" / "*.png"))] == ["d.png"]
    assert find_photos(tmp_path / "c.txt") == [tmp_path / "c.txt"]  # an explicit file is taken as given
    with pytest.raises(DataError, match="does not exist"):
        find_photos(tmp_path / "nope.png")
    with pytest.raises(DataError, match="no image files match"):
        find_photos(str(tmp_path / "*.bmp"))


def test_tensor_conversion_and_quantize():
    rgb = np.random.default_rng(1).random((5, 7, 3)).astype(np.float32)
    t = to_tensor(rgb)
    assert t.shape == (1, 3, 5, 7)
    np.testing.assert_array_equal(from_tensor(t), rgb)
    assert quantize(np.array([-0.1, 0.0, 0.5, 1.0, 1.7]), np.uint8).tolist() == [0, 0, 128, 255, 255]
    assert quantize(np.array([0.5]), np.uint16).tolist() == [32768]


def test_written_atomically_no_temp_left(tmp_path, chelsea):
    src = tmp_path / "x.png"
    Image.fromarray(chelsea).save(src)
    photo = read_photo(src)
    write_photo(tmp_path / "out" / "x.png", photo.rgb, photo)
    assert os.listdir(tmp_path / "out") == ["x.png"]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("depth", [8, 16])
def test_tiff_orientation_is_applied_once(tmp_path, chelsea, orientation, depth):
    """TIFF's orientation tag: OpenCV 5's decoder already applies it (JPEG/PNG not), so it must not be applied twice."""
    import tifffile
    exif = Image.Exif()
    exif[0x0112] = orientation
    ref = tmp_path / "ref.png"
    Image.fromarray(chelsea).save(ref, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(ref)).convert("RGB"))
    stored = chelsea.astype(np.uint16) * 257 if depth == 16 else chelsea
    src = tmp_path / f"o{orientation}.tif"
    tifffile.imwrite(src, stored, photometric="rgb", extratags=[(0x0112, "H", 1, orientation, True)])
    photo = read_photo(src)
    assert photo.bit_depth == depth and photo.size == expected.shape[:2]
    np.testing.assert_array_equal(quantize(photo.rgb, np.uint8), expected)


def test_cmyk_tiff_has_no_alpha(tmp_path, chelsea):
    src = tmp_path / "cmyk.tif"
    Image.fromarray(chelsea).convert("CMYK").save(src)
    photo = read_photo(src)
    assert photo.alpha is None and not photo.gray
    out = tmp_path / "cmyk_out.tif"
    write_photo(out, photo.rgb, photo)
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == chelsea.shape  # RGB, no invented alpha channel
    assert np.abs(quantize(photo.rgb, np.uint8).astype(int) - chelsea).mean() < 3  # CMYK round trip


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_gray_with_alpha_stays_two_channels(tmp_path, chelsea, ext):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    alpha = np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
    src = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha])).save(src)
    photo = read_photo(src)
    assert photo.gray and photo.bit_depth == 8
    np.testing.assert_array_equal(photo.alpha, alpha)
    out = tmp_path / f"la_out{ext}"
    write_photo(out, 1.0 - photo.rgb, photo)
    back = Image.open(out)
    assert back.mode == "LA"
    arr = np.asarray(back)
    np.testing.assert_array_equal(arr[..., 1], alpha)
    np.testing.assert_array_equal(arr[..., 0], 255 - gray)


def test_output_formats_are_checked(tmp_path, chelsea):
    src = tmp_path / "in16.png"
    cv2.imwrite(str(src), chelsea.astype(np.uint16)[:, :, ::-1] * 257)
    photo16 = read_photo(src)
    for ext in (".bmp", ".webp", ".jpg"):  # 8-bit-only formats would saturate 16-bit samples
        with pytest.raises(DataError, match=f"16-bit result as '\\{ext}'"):
            encode_photo(photo16.rgb, photo16, ext)
    assert cv2.imdecode(np.frombuffer(encode_photo(photo16.rgb, photo16, ".ppm"), np.uint8),
                        cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with pytest.raises(DataError, match=r"cannot write '\.xyz' files .*expected one of \.png"):
        encode_photo(photo16.rgb, photo16, "xyz")


def test_alpha_is_refused_only_where_the_format_cannot_hold_it(tmp_path, chelsea):
    alpha = np.tile(np.linspace(0, 255, chelsea.shape[1]).astype(np.uint8), (chelsea.shape[0], 1))
    src = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([chelsea, alpha]), "RGBA").save(src)
    photo = read_photo(src)
    for ext in (".jpg", ".ppm"):
        with pytest.raises(DataError, match=f"cannot keep the alpha channel .* '\\{ext}' file"):
            encode_photo(photo.rgb, photo, ext)
    for ext in (".bmp", ".webp", ".TIF"):  # 32-bit BMP, lossless WebP: alpha survives bit for bit
        back = cv2.imdecode(np.frombuffer(encode_photo(photo.rgb, photo, ext), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(back[..., 3], alpha)
