"""The default model's training photos: permissively licensed scikit-image photos plus folders of the user's.

``gather_photos`` fills one folder (the ``sharp_root`` of options/default_stage*.yml)
with the scikit-image photos below, as RGB PNG, and the images of each given
folder, byte for byte, and writes an ``ATTRIBUTION.md`` that keeps every
source's attribution (docs/default_model.md).  Names must not clash, and ``dst``
must hold no other image (one left from an earlier gathering would train the
model without being named in the attribution, a test photo perhaps); nothing is
written before both are checked.
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
    expected = {Path(n).stem + ".png" for n in SKIMAGE_PHOTOS} if skimage else set()
    expected |= {p.name for p in copies}
    strangers = [p.name for p in list_images(dst) if p.name not in expected] if dst.is_dir() else []
    if strangers:
        raise DataError(f"'{dst}' holds {len(strangers)} image(s) that this gathering does not bring "
                        f"({', '.join(strangers[:5])}{', ...' if len(strangers) > 5 else ''}): they would train the "
                        f"model without being named in ATTRIBUTION.md; remove them or gather into another folder")
    dst.mkdir(parents=True, exist_ok=True)
    lines = ["# Training photos of hidiff's default model", ""]
    if skimage:
        copy_photos(list(SKIMAGE_PHOTOS), dst)
        lines += ["## From scikit-image (skimage.data), stored as RGB PNG", "",
                  "| file | licence as stated in skimage.data |", "|---|---|"]
        lines += [f"| {Path(n).stem}.png | {lic} |" for n, lic in SKIMAGE_PHOTOS.items()] + [""]
    for path in copies:
        target, data = dst / path.name, path.read_bytes()
        if not target.is_file() or target.read_bytes() != data:    # a changed source photo is copied again
            atomic_write_bytes(target, data)
    for folder in folders:
        attribution = Path(folder) / "ATTRIBUTION.md"
        lines += [f"## From {Path(folder).name}/ (its ATTRIBUTION.md)", ""]
        lines += [attribution.read_text(encoding="utf-8").strip() if attribution.is_file()
                  else "(no ATTRIBUTION.md in that folder)", ""]
    atomic_write_text(dst / "ATTRIBUTION.md", "\n".join(lines))
    photos = list_images(dst)
    log(f"{len(photos)} photos in '{dst}'")
    return photos
