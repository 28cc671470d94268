"""hidiff-deblur gives photos back with their EXIF and ICC profile, orientation reset once the pixels are upright."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from hidiff.cli.deblur import main
from test_deblur_cli import SKIMAGE_DATA, save_release, tiny_state_dicts

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAKE, MODEL, ORIENTATION, EXIF_IFD, DATE_ORIGINAL = 0x010F, 0x0110, 0x0112, 0x8769, 0x9003


def camera_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "HidiffCam", "Model 7", orientation
    exif[EXIF_IFD] = {DATE_ORIGINAL: "2026:11:26 08:00:00"}
    return exif


@pytest.fixture(scope="module")
def deblurred(tmp_path_factory):
    """Photos with EXIF (orientation 6: stored sideways) and an sRGB profile, deblurred in one real run."""
    root = tmp_path_factory.mktemp("meta")
    rgb = np.asarray(Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB"))[100:140, 150:206].copy()
    src = root / "in"
    src.mkdir()
    im = Image.fromarray(rgb)
    im.save(src / "shot.jpg", exif=camera_exif(6).tobytes(), icc_profile=SRGB, quality=95)
    im.save(src / "shot_png.png", exif=camera_exif(6).tobytes(), icc_profile=SRGB)
    im.save(src / "shot_tif.tif", exif=camera_exif(6).tobytes(), icc_profile=SRGB)
    im.convert("L").save(src / "gray.jpg", exif=camera_exif(1).tobytes(), icc_profile=SRGB)  # RGB profile, gray
    tifffile.imwrite(src / "deep.tif", rgb.astype(np.uint16) * 257, photometric="rgb", metadata=None,
                     extratags=[(MAKE, "s", 0, "HidiffCam", True), (MODEL, "s", 0, "Model 7", True),
                                (ORIENTATION, "H", 1, 8, True), (34675, "B", len(SRGB), SRGB, True)])
    Image.fromarray(rgb).save(src / "plain.png")
    weights = save_release(root / "HI_Diff_tiny", tiny_state_dicts())
    out = root / "out"
    assert main([str(src), "-o", str(out), "--weights", str(weights), "--quiet"]) == 0
    return rgb, out


@pytest.mark.parametrize("name", ["shot.jpg", "shot_png.png", "shot_tif.tif"])
def test_exif_and_profile_are_kept_and_orientation_reset(deblurred, name):
    rgb, out = deblurred
    with Image.open(out / name) as im:
        exif = im.getexif()
        assert (exif[MAKE], exif[MODEL], exif[ORIENTATION]) == ("HidiffCam", "Model 7", 1)
        assert exif.get_ifd(EXIF_IFD)[DATE_ORIGINAL] == "2026:11:26 08:00:00"
        assert im.info["icc_profile"] == SRGB
        assert im.size == (rgb.shape[0], rgb.shape[1])  # written upright (was stored sideways)
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
    # a viewer that applies the tag shows the photo the right way round: the restored rgb turned by orientation 6
    upright = np.rot90(rgb, k=-1).astype(int)
    assert shown.shape == upright.shape and np.abs(shown - upright).mean() < 8


def test_sixteen_bit_tiff_keeps_main_tags_and_profile(deblurred):
    rgb, out = deblurred
    with tifffile.TiffFile(out / "deep.tif") as tif:
        page = tif.pages[0]
        tags = {t.code: t.value for t in page.tags.values()}
        data = page.asarray()
    assert data.dtype == np.uint16 and data.shape == (rgb.shape[1], rgb.shape[0], 3)  # orientation 8 applied
    assert (tags[MAKE], tags[MODEL], int(tags[ORIENTATION]), tags[34675]) == ("HidiffCam", "Model 7", 1, SRGB)


def test_profile_of_another_colour_space_is_dropped_and_plain_files_stay_plain(deblurred):
    _, out = deblurred
    with Image.open(out / "gray.jpg") as im:
        assert im.mode == "L" and "icc_profile" not in im.info  # an RGB profile cannot describe gray pixels
        assert im.getexif()[MAKE] == "HidiffCam"
    with Image.open(out / "plain.png") as im:
        assert "icc_profile" not in im.info and not im.getexif()


def test_a_profile_larger_than_one_jpeg_segment_is_split_and_reassembled(tmp_path):
    from hidiff.inference.image_io import read_photo, write_photo

    src = tmp_path / "big_profile.png"
    big = SRGB + bytes(range(256)) * 300  # 77 kB: more than one 64 kB APP2 segment holds
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(src, icc_profile=big)
    photo = read_photo(src)
    assert photo.icc_profile == big and photo.exif is None
    write_photo(tmp_path / "out.jpg", photo.rgb, photo)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.info["icc_profile"] == big
