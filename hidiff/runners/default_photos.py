"""The default model's training photos: permissively licensed scikit-image photos plus folders of the user's.

``gather_photos`` fills one folder (the ``sharp_root`` of options/default_stage*.yml)
with the scikit-image photos below, as RGB PNG, and the images of each given
folder, byte for byte, and writes an ``ATTRIBUTION.md`` that keeps every
source's attribution (docs/default_model.md).  Names must not clash; nothing
is written before that is checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Sequence

from hidiff.data.image_io import list_images
from hidiff.errors import DataError
from hidiff.runners.demo import copy_photos
from hidiff.utils.atomic import atomic_write_bytes, atomic_write_text

#: scikit-image photos and the licence each one's docstring states (skimage.data)
SKIMAGE_PHOTOS: Dict[str, str] = {
    "astronaut.png": "NASA, no known copyright restrictions, public domain",
    "coffee.png": "CC0, Rachel Michetti",
    "camera.png": "CC0, Lav Varshney",
    "brick.png": "CC0 (CC0Textures)",
    "grass.png": "CC0 (DeviantArt, linolafett)",
    "gravel.png": "CC0 (CC0Textures)",
    "coins.png": "Brooklyn Museum, no known copyright restrictions",
    "hubble_deep_field.jpg": "NASA, public domain",
    "retina.jpg": "CC0 1.0 (Wikimedia Commons)",
    "ihc.png": "CMMI, no known copyright restrictions",
}


def gather_photos(dst: Path, folders: Sequence[Path] = (), *, skimage: bool = True,
                  log: Callable[[str], None] = print) -> List[Path]:
    """Fill ``dst`` as described in the module doc; returns the photos in it (sorted).  Idempotent."""

    stems = {Path(n).stem: f"scikit-image {n}" for n in SKIMAGE_PHOTOS} if skimage else {}
    copies = []
    for folder in folders:
        for path in list_images(folder):   # a missing folder is a DataError here, before anything is written
            if path.stem in stems:
                raise DataError(f"'{path}' has the same name (stem '{path.stem}') as {stems[path.stem]}; "
                                f"rename one of them")
            stems[path.stem] = str(path)
            copies.append(path)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    lines = ["# Training photos of hidiff's default model", ""]
    if skimage:
        copy_photos(list(SKIMAGE_PHOTOS), dst)
        lines += ["## From scikit-image (skimage.data), stored as RGB PNG", "",
                  "| file | licence as stated in skimage.data |", "|---|---|"]
        lines += [f"| {Path(n).stem}.png | {lic} |" for n, lic in SKIMAGE_PHOTOS.items()] + [""]
    for path in copies:
        target = dst / path.name
        if not target.exists():
            atomic_write_bytes(target, path.read_bytes())
    for folder in folders:
        attribution = Path(folder) / "ATTRIBUTION.md"
        lines += [f"## From {Path(folder).name}/ (its ATTRIBUTION.md)", ""]
        lines += [attribution.read_text(encoding="utf-8").strip() if attribution.is_file()
                  else "(no ATTRIBUTION.md in that folder)", ""]
    atomic_write_text(dst / "ATTRIBUTION.md", "\n".join(lines))
    photos = list_images(dst)
    log(f"{len(photos)} photos in '{dst}'")
    return photos
