"""TorchScript / ONNX export of the stage-2 inference graph: parity with eager mode."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hidiff.archs import build_network
from hidiff.errors import ConfigError
from hidiff.inference.export import (InferenceGraph, example_inputs, export_onnx, export_torchscript, parity,
                                     read_description, run_onnx)
from hidiff.inference.official_weights import build_pipeline

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "net_g": dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                  heads=[1, 1, 1, 1], embed_dim=16),
    "net_le_dm": dict(type="latent_encoder_gelu", in_chans=3, stage=2, embed_dim=16, block_num=1),
    "net_d": dict(type="denoising", in_channel=64, out_channel=64, inner_channel=32, block_num=3),
}


@pytest.fixture(scope="module")
def tiny_sds():
    torch.manual_seed(0)
    return {k: build_network(v).state_dict() for k, v in TINY.items()}


@pytest.fixture(scope="module")
def pipeline(tiny_sds):
    return build_pipeline(tiny_sds, timesteps=2)[0]


def test_graph_equals_the_pipeline(pipeline):
    image, noise = example_inputs(pipeline, 32, 40)
    with torch.no_grad():
        assert torch.equal(InferenceGraph(pipeline)(image, noise), pipeline.restore(image, noise=noise))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_parity_and_noise_input(tmp_path, pipeline):
    path = export_torchscript(pipeline, tmp_path / "model.pt", height=32, width=48, metadata={"variant": "tiny"})
    assert parity(pipeline, path, "torchscript", height=32, width=48) <= 1e-5
    info = read_description(path)
    assert info["inputs"] == {"image": [1, 3, 32, 48], "noise": [1, 16, 64]} and info["variant"] == "tiny"
    assert info["diffusion_steps"] == 2
    image, noise = example_inputs(pipeline, 32, 48, seed=4)
    image2, _ = example_inputs(pipeline, 24, 16, seed=5)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        module = torch.jit.load(str(path))
        a, b, c = module(image, noise), module(image, noise + 1.0), module(image2, noise)
        assert not torch.allclose(a, b)  # x_T is a real input, not a constant baked into the graph
        torch.testing.assert_close(b, pipeline.restore(image, noise=noise + 1.0), atol=1e-5, rtol=0)
        # the traced graph also runs other sizes that are multiples of 8
        torch.testing.assert_close(c, pipeline.restore(image2, noise=noise), atol=1e-5, rtol=0)


def test_onnx_parity_with_onnxruntime_at_every_size(tmp_path, pipeline):
    path = export_onnx(pipeline, tmp_path / "model.onnx", height=32, width=32)
    assert parity(pipeline, path, "onnx", height=32, width=32) <= 1e-4
    assert read_description(path)["inputs"] == {"image": [1, 3, "H", "W"], "noise": [1, 16, 64]}
    image, noise = example_inputs(pipeline, 32, 32, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(path, image, noise + 0.5), pipeline.restore(image, noise=noise + 0.5),
                                   atol=1e-4, rtol=0)
    # H and W are dynamic axes: other multiples of 8, also where the latent encoder's 4x4 pooling bins
    # are uneven (88 / 4 = 22 positions) or overlap (24 / 4 = 6 positions)
    for h, w in ((88, 40), (24, 56), (136, 8)):
        assert parity(pipeline, path, "onnx", height=h, width=w) <= 1e-4, (h, w)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_onnx_fixed_size_export(tmp_path, pipeline):
    path = export_onnx(pipeline, tmp_path / "fixed.onnx", height=32, width=40, dynamic=False)
    assert read_description(path)["inputs"]["image"] == [1, 3, 32, 40]
    assert parity(pipeline, path, "onnx", height=32, width=40) <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_an_example_larger_than_a_stripe_still_exports_every_size(tmp_path, tiny_sds):
    # Stripes of 256 pixels: the 32x32 example is cut into stripes and the HIM into chunks.  Traced that way,
    # both files held the example's stripes as constants: NaN or 0.28 off at 48x40, an error at 16x16.
    pipe = build_pipeline(tiny_sds, timesteps=2)[0]
    pipe.net_g.set_inference_chunk_pixels(256)
    files = {"torchscript": export_torchscript(pipe, tmp_path / "m.pt", height=32, width=32),
             "onnx": export_onnx(pipe, tmp_path / "m.onnx", height=32, width=32)}
    for kind, path in files.items():
        for h, w in ((32, 32), (48, 40), (16, 16)):
            assert parity(pipe, path, kind, height=h, width=w) <= 1e-4, (kind, h, w)
    # export leaves the pipeline's own stripe size as it was
    chunked = [m.inference_chunk_pixels for m in pipe.net_g.modules() if hasattr(m, "inference_chunk_pixels")]
    assert chunked and set(chunked) == {256}


def test_exportable_pool_equals_adaptive_pooling():
    from hidiff.archs.adaptive_pool import adaptive_avg_pool2d_matmul
    for h, w in ((16, 16), (22, 6), (7, 5), (3, 9), (1, 1)):
        x = torch.randn(2, 3, h, w)
        torch.testing.assert_close(adaptive_avg_pool2d_matmul(x, 4, 4),
                                   torch.nn.functional.adaptive_avg_pool2d(x, (4, 4)), atol=1e-6, rtol=0)


def test_prior_free_network_exports_with_one_input(tmp_path):
    torch.manual_seed(0)
    net = build_network(dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                             heads=[1, 1, 1, 1], use_prior=False))
    pipe = build_pipeline({"net_g": net.state_dict()})[0]
    path = export_torchscript(pipe, tmp_path / "plain.pt", height=16, width=24)
    assert list(read_description(path)["inputs"]) == ["image"]
    assert parity(pipe, path, "torchscript", height=16, width=24) <= 1e-5


def test_sizes_must_fit_the_divisor(pipeline, tmp_path):
    with pytest.raises(ConfigError, match="multiples of 8"):
        export_torchscript(pipeline, tmp_path / "x.pt", height=30, width=32)


def test_export_script(tmp_path, tiny_sds, capsys):
    """scripts/export.py end to end (in-process: a subprocess would pay the torch import again)."""
    release = tmp_path / "release"
    release.mkdir()
    for name, sd in tiny_sds.items():
        torch.save({"params": sd}, release / f"{name}.pth")
    main = runpy.run_path(str(REPO / "scripts" / "export.py"), run_name="export_script")["main"]
    out = tmp_path / "exported" / "tiny"
    assert main(["--weights", str(release), "-o", str(out), "--format", "torchscript", "--height", "24",
                 "--width", "32", "--timesteps", "2", "--check"]) == 0
    assert "max |torchscript - eager|" in capsys.readouterr().out
    info = read_description(out.with_suffix(".pt"))
    assert info["inputs"]["image"] == [1, 3, 24, 32] and info["diffusion_steps"] == 2
    assert main(["--weights", str(tmp_path / "nope"), "-o", str(out) + "_2"]) == 2
    assert "nope" in capsys.readouterr().err


def test_export_names_its_files_and_never_replaces_one_unasked(tmp_path, tiny_sds, capsys):
    """``-o name_v1.5`` wrote name_v1.pt (with_suffix ate the '.5'), and a second export replaced it silently."""
    from hidiff.cli.export import main

    release = tmp_path / "release"
    release.mkdir()
    for name, sd in tiny_sds.items():
        torch.save({"params": sd}, release / f"{name}.pth")
    args = ["--weights", str(release), "--format", "torchscript", "--height", "16", "--width", "16",
            "--timesteps", "2"]
    assert main(args + ["-o", str(tmp_path / "out" / "tiny_v1.5")]) == 0
    written = tmp_path / "out" / "tiny_v1.5.pt"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny_v1.5.pt"]
    before = written.read_bytes()
    assert main(args + ["-o", str(tmp_path / "out" / "tiny_v1.5"), "--height", "24"]) == 2
    assert "already exist" in capsys.readouterr().err and written.read_bytes() == before
    assert main(args + ["-o", str(written), "--height", "24", "--overwrite"]) == 0     # a .pt ending is the file
    assert read_description(written)["inputs"]["image"] == [1, 3, 24, 16]
    with pytest.raises(SystemExit) as exit_:
        main(args + ["-o", str(tmp_path / "x"), "--format", "onnx", "--opset", "13"])
    assert exit_.value.code == 2 and "--opset 13" in capsys.readouterr().err


def test_a_failed_export_of_both_formats_leaves_no_file(tmp_path, tiny_sds, capsys, monkeypatch):
    # the TorchScript file was written first and stayed when the ONNX half failed (an opset the exporter does
    # not write, a missing package), under a message saying nothing was written; a rerun was then refused
    from hidiff.cli.export import main

    release = tmp_path / "release"
    release.mkdir()
    for name, sd in tiny_sds.items():
        torch.save({"params": sd}, release / f"{name}.pth")
    args = ["--weights", str(release), "--format", "both", "--height", "16", "--width", "16", "--timesteps", "2",
            "-o", str(tmp_path / "out" / "m")]
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the package were not installed
    assert main(args) == 2
    assert "onnxscript" in capsys.readouterr().err and not list(tmp_path.glob("out/m.*"))
    # an opset the exporter cannot write: refused before any export; no file is written, and a file the failed
    # command would have replaced (--overwrite) is kept as it was
    monkeypatch.delitem(sys.modules, "onnxscript")
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "m.onnx").write_bytes(b"earlier")
    import onnx

    beyond = onnx.defs.onnx_opset_version() + 1                      # newer than the installed onnx defines
    assert main(args + ["--opset", str(beyond), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"ONNX opset {beyond} cannot be written" in err and "nothing was written" in err, err
    assert [p.name for p in tmp_path.glob("out/m.*")] == ["m.onnx"]                 # no m.pt either
    assert (tmp_path / "out" / "m.onnx").read_bytes() == b"earlier"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.onnx"]      # no temporary left


def test_an_opset_the_exporter_cannot_write_is_refused_before_the_export(tmp_path, pipeline, monkeypatch):
    import hidiff.inference.export as export_module
    import onnx

    def no_export(*args, **kwargs):
        raise AssertionError("torch.onnx.export was called")

    monkeypatch.setattr(export_module.torch.onnx, "export", no_export)
    newest = onnx.defs.onnx_opset_version()
    for opset in (17, newest + 1):
        with pytest.raises(ConfigError, match=f"ONNX opset {opset} cannot be written: .* up to {newest}"):
            export_onnx(pipeline, tmp_path / "m.onnx", height=16, width=16, opset=opset)
    assert not list(tmp_path.iterdir())


def test_a_failed_overwrite_keeps_both_earlier_files(tmp_path, tiny_sds, capsys, monkeypatch):
    # with --format both --overwrite the ONNX file was replaced first; when the TorchScript half then failed,
    # the earlier ONNX file was gone and the new one stood beside the earlier TorchScript file (two sizes)
    import hidiff.inference.export as export_module
    from hidiff.cli.export import main
    from hidiff.errors import HidiffError

    release = tmp_path / "release"
    release.mkdir()
    for name, sd in tiny_sds.items():
        torch.save({"params": sd}, release / f"{name}.pth")
    out = tmp_path / "out"
    args = ["--weights", str(release), "--format", "both", "--width", "16", "--timesteps", "2", "-o", str(out / "m")]
    assert main(args + ["--height", "16", "--static-onnx"]) == 0     # fixed sizes: the quicker export
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["m.onnx", "m.pt"]

    def fail(*args, **kwargs):
        raise HidiffError("simulated TorchScript failure")

    monkeypatch.setattr(export_module, "export_torchscript", fail)
    assert main(args + ["--height", "24", "--overwrite", "--static-onnx"]) == 2
    assert "simulated TorchScript failure" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before       # both earlier files, nothing else
    assert read_description(out / "m.onnx")["inputs"]["image"] == [1, 3, 16, 16]
    monkeypatch.undo()
    assert main(args + ["--height", "24", "--overwrite", "--static-onnx"]) == 0  # a success replaces both
    assert sorted(p.name for p in out.iterdir()) == ["m.onnx", "m.pt"]
    assert read_description(out / "m.onnx")["inputs"]["image"] == [1, 3, 24, 16]
    assert read_description(out / "m.pt")["inputs"]["image"] == [1, 3, 24, 16]


@pytest.mark.parametrize("flag", [["--timesteps", "3"], ["--height", "16"], ["--width", "16"], ["--static-onnx"],
                                  ["--check"], ["--opset", "18"]])
def test_a_model_folder_refuses_the_graph_flags_it_would_ignore(tmp_path, tiny_sds, capsys, flag):
    from hidiff.cli.export import main

    release = tmp_path / "release"
    release.mkdir()
    for name, sd in tiny_sds.items():
        torch.save({"params": sd}, release / f"{name}.pth")
    out = tmp_path / "models" / "tiny"
    with pytest.raises(SystemExit) as exit_:
        main(["--weights", str(release), "-o", str(out), "--format", "model", *flag])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{flag[0]} goes with --format torchscript, onnx or both" in err, err
    assert not out.exists()


@pytest.mark.parametrize("steps", [0, -2, 1.5, True])
def test_a_release_refuses_a_step_count_that_is_not_a_positive_integer(tiny_sds, steps):
    # timesteps=0 was taken as "not given" for release folders: T=8 without a word (a model folder refused it)
    with pytest.raises(ConfigError, match="timesteps: expected a positive integer"):
        build_pipeline(tiny_sds, timesteps=steps)


def test_window_attention_exports_at_its_example_size_only_and_says_so(tmp_path):
    # Swintormer's window padding and masks are worked out in Python: its "dynamic" files failed, or gave
    # other images, at any other size; and the export cached a fake mask that later eager calls received
    from hidiff.runners.weights import from_release, inference_pipeline

    torch.manual_seed(0)
    spec = dict(type="Swintormer", dim=8, heads=[1, 1, 2, 2], inp_channels=3, num_blocks=[1, 1, 1, 2],
                num_refinement_blocks=2, window_size=2)
    folder = tmp_path / "swin"
    folder.mkdir()
    torch.save({"params": build_network(spec).state_dict()}, folder / "net_g.pth")
    (folder / "model.yml").write_text(yaml.safe_dump({"model_type": "PlainRestoration", "name": "tiny_swin",
                                                      "network_g": spec, "val": {"window_size": 32}}))
    pipe = inference_pipeline(from_release(folder), torch.device("cpu"))[0]
    with pytest.raises(ConfigError, match=r"SWDA .* nothing was written.*--static-onnx"):
        export_onnx(pipe, tmp_path / "d.onnx", height=64, width=64)
    assert not (tmp_path / "d.onnx").exists()
    path = export_onnx(pipe, tmp_path / "s.onnx", height=64, width=64, dynamic=False)
    assert "64x64 only" in read_description(path)["runs_at"]
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = pipe.restore(image)
    assert type(out) is torch.Tensor and torch.isfinite(out).all()  # a real tensor after the export
    assert parity(pipe, path, "onnx", height=64, width=64) <= 1e-4
    ts = export_torchscript(pipe, tmp_path / "s.pt", height=64, width=64)
    assert "64x64 only" in read_description(ts)["runs_at"]


def test_the_command_and_the_exporter_agree_on_the_oldest_opset():
    """The command keeps its own copy (it loads without torch): the two must not drift apart."""
    from hidiff.cli.export import MIN_OPSET
    from hidiff.inference.export import OLDEST_ONNX_OPSET

    assert MIN_OPSET == OLDEST_ONNX_OPSET


def test_the_files_of_one_export_replace_the_earlier_ones_all_or_none(tmp_path, monkeypatch):
    """--format both --overwrite renamed the ONNX file into place, then the TorchScript rename failed: the
    earlier ONNX file was gone beside the earlier TorchScript file (an OSError traceback, too)."""
    import os

    from hidiff.cli.export import _replace_all
    from hidiff.errors import HidiffError

    targets = [tmp_path / "m.onnx", tmp_path / "m.pt", tmp_path / "m.new"]
    targets[0].write_bytes(b"earlier onnx")
    targets[1].write_bytes(b"earlier pt")                   # m.new has no earlier file
    staged = []
    for t in targets:
        staged.append(tmp_path / f".{t.stem}.partial{t.suffix}")
        staged[-1].write_bytes(b"new " + t.suffix.encode())
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("m.new"):
            raise PermissionError(13, "simulated", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(HidiffError, match="every earlier file is kept"):
        _replace_all(list(zip(staged, targets)))
    monkeypatch.undo()
    assert targets[0].read_bytes() == b"earlier onnx" and targets[1].read_bytes() == b"earlier pt"
    assert not targets[2].exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".m.")) == ["m.onnx", "m.pt"]
    assert not list(tmp_path.glob(".*before*"))            # no backup left
    for path, t in zip(staged, targets):                    # the command stages its files again
        path.write_bytes(b"new " + t.suffix.encode())
    _replace_all(list(zip(staged, targets)))                # nothing failing: every file replaced
    assert [t.read_bytes() for t in targets] == [b"new .onnx", b"new .pt", b"new .new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.new", "m.onnx", "m.pt"]
