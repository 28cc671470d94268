"""Image decoding for datasets: channel order, bit depth, and errors that name the file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hidiff.data.image_io import (
    decode_image, encode_png, float_to_uint8, list_images, read_image, read_image_uint8, write_png)
from hidiff.errors import DataError


def test_color_order_is_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 10   # blue
    bgr[..., 1] = 20   # green
    bgr[..., 2] = 250  # red
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    img = read_image(tmp_path / "a.png")
    assert img.dtype == np.float32 and img.shape == (4, 5, 3)
    np.testing.assert_array_equal(img[0, 0], np.float32([250, 20, 10]) / np.float32(255))


def test_16bit_gray_and_alpha(tmp_path):
    cv2.imwrite(str(tmp_path / "g16.png"), np.full((3, 3), 65535, np.uint16))
    g = read_image(tmp_path / "g16.png")
    assert g.shape == (3, 3, 3) and float(g.min()) == 1.0
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 255, 7
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (2, 2, 3) and rgb[0, 0, 0] == 1.0 and rgb[0, 0, 2] == 0.0


def test_write_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(read_image_uint8(tmp_path / "x.png"), rgb)
    np.testing.assert_array_equal(float_to_uint8(decode_image(encode_png(rgb), "mem")), rgb)


def test_errors_name_path_and_reason(tmp_path):
    with pytest.raises(DataError, match=r"missing\.png' does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png'.*empty"):
        read_image(tmp_path / "empty.png")
    data = encode_png(np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png'.*truncated or corrupt PNG"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "text.png").write_bytes(b"hello, not an image")
    with pytest.raises(DataError, match=r"text\.png'.*not a supported image format"):
        read_image(tmp_path / "text.png")


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.JPG", ".hidden.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")
