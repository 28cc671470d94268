"""hidiff-deblur -r: a real nested folder is mirrored under -o, and every skipped entry is named."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from hidiff.cli.deblur import main
from test_deblur_cli import SKIMAGE_DATA, save_release, tiny_state_dicts


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_release(tmp_path_factory.mktemp("rec") / "HI_Diff_tiny", tiny_state_dicts())


@pytest.fixture()
def tree(tmp_path):
    rgb = np.asarray(Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB"))[100:124, 150:182]
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    Image.fromarray(rgb).save(root / "a.png")
    Image.fromarray(rgb[::-1]).save(root / "sub" / "b.jpg", quality=95)
    Image.fromarray(rgb[:, ::-1]).save(root / "sub" / "deeper" / "c.png")
    Image.fromarray(rgb).save(root / ".hidden.png")
    (root / "notes.txt").write_text("not a photo")
    (root / "sub" / "deeper" / "c.xmp").write_text("<x:xmpmeta/>")
    os.symlink(root / "sub", root / "link_to_sub")
    os.symlink(root / "missing.png", root / "dangling.png")
    return root


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_recursive_mirrors_the_tree_and_names_what_it_skipped(tmp_path, tree, weights, capsys):
    out = tmp_path / "out"
    assert main([str(tree), "-r", "-o", str(out), "--weights", str(weights), "--quiet"]) == 1  # the dangling link
    assert files_under(out) == ["a.png", "sub/b.jpg", "sub/deeper/c.png"]
    err = capsys.readouterr().err
    for entry, reason in (("notes.txt", "not an image"), ("sub/deeper/c.xmp", "not an image"),
                          (".hidden.png", "hidden"), ("link_to_sub", "not followed")):
        assert f"skip: {tree / entry}: " in err and reason in err.split(f"skip: {tree / entry}: ")[1].splitlines()[0]
    assert f"error: {tree / 'dangling.png'}: a link that leads nowhere" in err
    assert "3 deblurred, 0 skipped, 1 failed of 4 image(s)" in err
    # each output is its own input restored: the same bytes as deblurring that file alone
    assert main([str(tree / "sub" / "deeper" / "c.png"), "-o", str(tmp_path / "alone"), "--weights", str(weights),
                 "--quiet"]) == 0
    assert (out / "sub" / "deeper" / "c.png").read_bytes() == (tmp_path / "alone" / "c.png").read_bytes()
    # without -r only the top folder's photos
    assert main([str(tree), "-o", str(tmp_path / "flat"), "--weights", str(weights), "--quiet"]) == 0
    assert files_under(tmp_path / "flat") == ["a.png"]


def test_an_output_folder_inside_the_tree_is_never_read_back(tree, weights, capsys):
    (tree / "dangling.png").unlink()
    out = tree / "restored"
    for extra in ([], ["--overwrite"]):
        assert main([str(tree), "-r", "-o", str(out), "--weights", str(weights), "--quiet", *extra]) == 0
    assert files_under(out) == ["a.png", "sub/b.jpg", "sub/deeper/c.png"]
    assert f"skip: {out}: the output folder" in capsys.readouterr().err
    # -o the input tree itself would overwrite the inputs: refused before anything is written
    assert main([str(tree / "sub"), "-r", "-o", str(tree / "sub"), "--weights", str(weights), "--quiet"]) == 2
    assert "would overwrite the input file" in capsys.readouterr().err
