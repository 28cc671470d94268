"""Preflight: what needs the filesystem or several blocks is checked before anything is written.

Real option files and real folders in tmp_path; every check also asserts that nothing was created.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import load_options
from hidiff.engine.preflight import check_testing, check_training
from hidiff.errors import ConfigError


def snapshot(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def load(tmp_path: Path, opt: dict, is_train: bool = True):
    path = tmp_path / "opt.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return load_options(path, is_train=is_train)


def preflight_error(tmp_path: Path, options, check=check_training) -> str:
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        check(options)
    assert snapshot(tmp_path) == before, "preflight wrote something"
    msg = str(err.value)
    assert msg.startswith(str(options.source)), msg
    return msg


@pytest.fixture
def data(tmp_path):
    write_pairs(tmp_path / "data", n=3, size=16)
    return tmp_path


def test_valid_run_passes_and_writes_nothing(data):
    options = load(data, tiny_options(data, with_val=True))
    before = snapshot(data)
    check_training(options)
    assert snapshot(data) == before
    assert not (data / "experiments").exists()


def test_experiments_root_that_is_a_file(data):
    (data / "taken").write_text("not a folder")
    options = load(data, tiny_options(data, path={"experiments_root": str(data / "taken")}))
    msg = preflight_error(data, options)
    assert f"path.experiments_root: '{data / 'taken'}' is a file, not a folder" in msg, msg


def test_experiments_root_below_a_file_cannot_be_created(data):
    (data / "taken").write_text("not a folder")
    root = data / "taken" / "runs"
    msg = preflight_error(data, load(data, tiny_options(data, path={"experiments_root": str(root)})))
    assert f"path.experiments_root: '{root}' cannot be created: '{data / 'taken'}' is a file" in msg, msg


def test_run_folder_that_is_a_file(data):
    (data / "experiments").mkdir()
    (data / "experiments" / "tiny").write_text("")
    msg = preflight_error(data, load(data, tiny_options(data)))
    assert "the folder of 'tiny'" in msg and "is a file" in msg, msg


def test_every_dataset_problem_at_once(data):
    """A missing train folder and an unpaired val set are both reported, with the key of each block."""
    (data / "val_lq").mkdir()
    (data / "val_gt").mkdir()
    (data / "data" / "input" / "im00.png").rename(data / "val_lq" / "im00.png")
    (data / "data" / "target" / "im01.png").rename(data / "val_gt" / "im01.png")
    opt = tiny_options(data, with_val=True)
    opt["datasets"]["train"]["dataroot_lq"] = str(data / "missing")
    opt["datasets"]["val"].update(dataroot_lq=str(data / "val_lq"), dataroot_gt=str(data / "val_gt"))
    msg = preflight_error(data, load(data, opt))
    assert "2 problem(s)" in msg, msg
    assert f"datasets.train: dataset 'tinytrain' dataroot_lq: '{data / 'missing'}' does not exist" in msg, msg
    assert "datasets.val: dataset 'tinyval' (phase val): input and target images do not pair up" in msg, msg
    assert "im01" in msg and "im00" in msg, msg


def test_lmdb_dataroot_without_meta_info(data):
    opt = tiny_options(data)
    opt["datasets"]["train"]["io_backend"] = {"type": "lmdb"}
    msg = preflight_error(data, load(data, opt))
    assert "datasets.train:" in msg and "meta_info" in msg, msg


def test_synthetic_dataset_without_photos(data):
    (data / "empty").mkdir()
    opt = tiny_options(data)
    opt["datasets"]["train"] = {"name": "syn", "type": "SyntheticBlurDataset", "sharp_root": str(data / "empty"),
                                "gt_size": 16, "batch_size_per_gpu": 2}
    msg = preflight_error(data, load(data, opt))
    assert f"datasets.train: dataset 'syn': no images in sharp_root '{data / 'empty'}'" in msg, msg


def test_stage1_link_must_resolve(data):
    opt = tiny_options(data)
    opt.update(model_type="HI_Diff_S2", name="s2", diffusion_schedule={"timesteps": 3},
               network_le_dm={"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 16, "block_num": 1,
                              "stage": 2},
               network_d={"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                          "block_num": 3, "group": 4})
    opt["path"]["stage1"] = "no_such_stage1_run"
    opt["path"]["pretrain_network_d"] = str(data / "missing_d.pth")
    msg = preflight_error(data, load(data, opt))
    assert "path.stage1: the stage-1 run 'no_such_stage1_run' was not found" in msg, msg
    assert f"path.pretrain_network_d: file not found: {data / 'missing_d.pth'}" in msg, msg


def test_metric_options_must_fit_the_metric(data):
    opt = tiny_options(data)
    opt["val"]["metrics"]["ssim"] = {"type": "ssim_matlab3d", "crop_border": 4}
    msg = preflight_error(data, load(data, opt))
    assert "val.metrics.ssim.crop_border: metric 'ssim_matlab3d' does not support it" in msg, msg


def test_resume_state_must_exist(data):
    msg = preflight_error(data, load(data, tiny_options(data, path={"resume_state": str(data / "x.state")})))
    assert f"path.resume_state: no training state file at '{data / 'x.state'}'" in msg, msg


def test_every_test_set_of_a_test_file(data):
    (data / "results").write_text("a file")
    opt = tiny_options(data)
    train = opt["datasets"].pop("train")
    del opt["train"]
    opt["path"] = {"results_root": str(data / "results")}
    opt["datasets"] = {
        "test_1": {"name": "good", "type": "PairedImageIRDataset", "dataroot_lq": train["dataroot_lq"],
                   "dataroot_gt": train["dataroot_gt"]},
        "test_2": {"name": "bad", "type": "PairedImageIRDataset", "dataroot_lq": str(data / "nope"),
                   "dataroot_gt": train["dataroot_gt"], "weights": {"g": str(data / "nope_g.pth")}},
    }
    options = load(data, opt, is_train=False)
    msg = preflight_error(data, options, check_testing)
    assert "3 problem(s)" in msg, msg
    assert f"path.results_root: '{data / 'results'}' is a file, not a folder" in msg, msg
    assert "datasets.test_2: dataset 'bad' dataroot_lq" in msg and "datasets.test_1" not in msg, msg
    assert f"datasets.test_2.weights.g: file not found: {data / 'nope_g.pth'}" in msg, msg


NOBODY = 65534   # the unprivileged user and group of Linux distributions ("nobody", "nogroup"/"nobody")


def run_as_user(uid: int, fn):
    """``fn()`` in a forked child whose user and group are ``uid`` (only root may switch); returns its result.

    A fork, not a new interpreter: the interpreter of the virtual environment may live where ``uid`` cannot read
    (root's home), and the forked child has every module the parent imported already.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: it never returns into pytest
        try:
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                payload = pickle.dumps(("ok", fn()))
            except BaseException as exc:  # noqa: B036 - reported to the parent, which fails the test
                payload = pickle.dumps(("raised", f"{type(exc).__name__}: {exc}"))
            with os.fdopen(write, "wb") as sink:
                sink.write(payload)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"the child run as uid {uid} ended with wait status {status}"
    kind, value = pickle.loads(data)
    assert kind == "ok", f"as uid {uid}: {value}"
    return value


def test_unwritable_parent(data):
    """An experiments root that would be created in a folder its user may not write (0o500, the user's own).

    Root may write anywhere, so as root (this machine, CI) the check runs in a child process switched to the
    unprivileged user nobody, on data in a folder that user can read (tmp_path is root's alone, 0o700)."""
    if os.geteuid() != 0:
        locked = data / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            msg = preflight_error(data, load(data, tiny_options(data, path={"experiments_root": str(locked / "r")})))
        finally:
            locked.chmod(0o700)
    else:
        shared = Path(tempfile.mkdtemp(prefix="hidiff_preflight_"))
        locked = shared / "locked"
        try:
            write_pairs(shared / "data", n=3, size=16)
            for path in [shared, *shared.rglob("*")]:        # whatever the umask: nobody reads the data
                path.chmod(0o755 if path.is_dir() else 0o644)
            locked.mkdir()
            os.chown(locked, NOBODY, NOBODY)
            locked.chmod(0o500)
            options = load(shared, tiny_options(shared, path={"experiments_root": str(locked / "r")}))
            before = snapshot(shared)
            check_training(options)   # as root it passes (and the child finds every module it needs imported)

            def check_unprivileged():
                try:
                    check_training(options)
                except ConfigError as exc:
                    return os.geteuid(), os.getegid(), str(exc)
                return os.geteuid(), os.getegid(), None

            uid, gid, msg = run_as_user(NOBODY, check_unprivileged)
            assert (uid, gid) == (NOBODY, NOBODY)
            assert snapshot(shared) == before, "preflight wrote something"
            assert msg is not None, "the preflight of an unprivileged user passed on a folder it cannot write"
            assert msg.startswith(str(options.source)), msg
        finally:
            shutil.rmtree(shared)             # root removes it, 0o500 folder included
    assert "1 problem(s)" in msg, msg     # only the folder: the data was read
    assert f"path.experiments_root: '{locked / 'r'}' cannot be created: '{locked}' is not writable" in msg, msg


def test_stage2_waits_for_an_unfinished_stage1_unless_the_iteration_is_named(data):
    """A stage-1 run stopped at 2 of 4 iterations would hand stage 2 an early checkpoint without a word."""
    from engine_tiny_run import tiny_s2_options
    from hidiff.config import options_from_text
    from hidiff.engine.trainer import Trainer

    stage1 = tiny_options(data, train={"total_iter": 4}, logger={"save_checkpoint_freq": 2}, name="s1",
                          datasets={"train": {"gt_size": 16}})
    Trainer(options_from_text(yaml.safe_dump(stage1, sort_keys=False)), stop_after=2).fit()
    s2 = tiny_s2_options(data)
    del s2["path"]["pretrain_network_g"], s2["path"]["pretrain_network_le"]
    s2["path"]["stage1"] = "s1"
    msg = preflight_error(data, load(data, s2))
    assert (f"path.stage1: the stage-1 run 's1' ({data / 'experiments' / 's1'}) has reached iteration 2 of its 4; "
            "finish it first") in msg and "path.stage1_iter: 2" in msg, msg
    # a config.yml that the current schema no longer loads (an older hidiff's key): its total_iter still counts
    config = data / "experiments" / "s1" / "config.yml"
    saved = config.read_text()
    config.write_text(saved + "retired_key: 1\n")
    assert "has reached iteration 2 of its 4" in preflight_error(data, load(data, s2))
    config.write_text("not: [a, training, file\n")
    msg = preflight_error(data, load(data, s2))
    assert "cannot tell whether the stage-1 run 's1' finished" in msg and "path.stage1_iter: 2" in msg, msg
    config.write_text(saved)
    s2["path"]["stage1_iter"] = 2                      # on purpose: accepted
    check_training(load(data, s2))
    Trainer(options_from_text(yaml.safe_dump(stage1, sort_keys=False)), resume="auto").fit()
    s2["path"]["stage1_iter"] = "latest"               # finished: accepted
    check_training(load(data, s2))
