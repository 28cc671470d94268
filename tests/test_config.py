"""Option files are validated once, with errors that name the key and the fix."""
from __future__ import annotations

import textwrap

import pytest

from hidiff.config import apply_overrides, config_hash, load_options, options_from_text, save_resolved
from hidiff.errors import ConfigError

BASE = textwrap.dedent("""
    name: cfg_test
    model_type: HI_Diff_S1
    manual_seed: 7
    datasets:
      train:
        name: syn
        type: SyntheticBlurDataset
        sharp_root: {root}
        gt_size: 32
        batch_size_per_gpu: 2
    network_g: {{type: Transformer, dim: 8, num_blocks: [1, 1, 1, 1], num_refinement_blocks: 1,
                 heads: [1, 1, 1, 1], embed_dim: 16}}
    network_le: {{type: latent_encoder_gelu, in_chans: 6, embed_dim: 16, block_num: 1}}
    train:
      total_iter: 10
      optim_total: {{type: AdamW, lr: 2e-4, betas: [0.9, 0.999]}}
      scheduler: {{type: CosineAnnealingRestartCyclicLR, periods: [5, 5], restart_weights: [1, 1], eta_mins: [2e-4, 1e-6]}}
      pixel_opt: {{type: L1Loss, loss_weight: 1.0}}
    val:
      val_freq: 5
""")


@pytest.fixture
def text(tmp_path):
    return BASE.format(root=tmp_path)


def test_valid_file_gives_typed_objects(text):
    opt = options_from_text(text)
    assert opt.train.total_iter == 10
    assert opt.train.optim_total.kwargs["lr"] == pytest.approx(2e-4)  # 2e-4 is a float, not a string
    assert opt.datasets["train"].phase == "train"
    assert opt.datasets["train"].params["gt_size"] == 32
    assert opt.networks["g"].kwargs["dim"] == 8
    assert opt.manual_seed == 7


@pytest.mark.parametrize("edit, expected", [
    (("val_freq: 5", "val_frq: 5"), ["val.val_frq", "did you mean 'val_freq'"]),
    (("total_iter: 10", "total_iter: ten"), ["train.total_iter", "expected an integer"]),
    (("sharp_root:", "sharp_rot:"), ["datasets.train.sharp_rot", "did you mean 'sharp_root'"]),
    (("type: latent_encoder_gelu", "type: latent_encoder_gelo"), ["network_le.type", "did you mean 'latent_encoder_gelu'",
                                                                  "latent_encoder_lrelu"]),
    (("dim: 8", "dimm: 8"), ["network_g.dimm", "did you mean 'dim'"]),
    (("model_type: HI_Diff_S1", "model_type: HI_Diff_S3"), ["model_type", "HI_Diff_S1"]),
    (("type: L1Loss", "type: L1Los"), ["train.pixel_opt.type", "did you mean 'L1Loss'"]),
    (("type: AdamW", "type: AdamX"), ["train.optim_total.type", "unknown optimizer"]),
    (("manual_seed: 7", "manual_seed: 7\nlogger: {print_freq: true}"), ["logger.print_freq", "expected an integer"]),
])
def test_each_error_names_key_and_fix(text, edit, expected):
    bad = text.replace(*edit)
    with pytest.raises(ConfigError) as err:
        options_from_text(bad)
    for fragment in expected:
        assert fragment in str(err.value), str(err.value)


@pytest.mark.parametrize("literal, value", [("2e-4", 2e-4), ("1e4", 1e4), (".5e1", 5.0), ("-.5", -0.5),
                                            ("+.5e-2", 5e-3), ("1_000.5", 1000.5)])
def test_every_float_spelling_is_a_number(literal, value):
    """Floats without a leading digit or an exponent sign are numbers too, not strings that fail later."""
    from hidiff.config.yaml_io import load_yaml_text
    assert load_yaml_text(f"x: {literal}")["x"] == pytest.approx(value)


def test_duplicate_keys_fail(tmp_path, text):
    path = tmp_path / "dup.yml"
    path.write_text(text.replace("manual_seed: 7", "manual_seed: 7\nmanual_seed: 8"))
    with pytest.raises(ConfigError, match=r"duplicate key 'manual_seed' at line \d+"):
        load_options(path)


@pytest.mark.parametrize("edit, expected", [
    (("  total_iter: 10", "  total_iter: 10\n  mixing_augs: {mixup: false}"), "train.mixing_augs: mixup is not"),
    (("  val_freq: 5", "  val_freq: 5\n  selfensemble_testing: true"),
     "val.selfensemble_testing: the official code ignores this key; hidiff's x8 self-ensemble is val.self_ensemble"),
    (("    gt_size: 32", "    gt_size: 32\n    use_hflip: true"), "datasets.train.use_hflip: flips are part of"),
    (("    gt_size: 32", "    gt_size: 32\n    use_rot: false"), "datasets.train.use_rot: rotations are part of"),
])
def test_dead_official_keys_explained(text, edit, expected):
    """Keys the official code reads nowhere (docs/quirks.md, quirk 17) fail with why, rather than silently doing something."""
    with pytest.raises(ConfigError) as err:
        options_from_text(text.replace(*edit))
    assert expected in str(err.value), str(err.value)


def test_progressive_schedule_must_sum_to_total(text):
    bad = text.replace("batch_size_per_gpu: 2", "batch_size_per_gpu: 2\n    mini_batch_sizes: [2, 1]\n"
                       "    iters: [4, 4]\n    gt_sizes: [16, 32]")
    with pytest.raises(ConfigError, match="sums to 8 but train.total_iter is 10"):
        options_from_text(bad)


def test_overrides_dotted_and_basicsr_style(text):
    opt = options_from_text(text, overrides=["train.total_iter=3", "network_g:dim=16", "val.save_img=true"])
    assert opt.train.total_iter == 3 and opt.networks["g"].kwargs["dim"] == 16 and opt.val.save_img is True
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["train.total_iter"])
    with pytest.raises(ConfigError, match="train.total_itr"):
        options_from_text(text, overrides=["train.total_itr=3"])


def test_resolved_config_roundtrip_and_hash(tmp_path, text):
    opt = options_from_text(text)
    out = tmp_path / "run" / "config.yml"
    save_resolved(opt, out)
    again = load_options(out)
    assert config_hash(again) == config_hash(opt)
    assert config_hash(options_from_text(text, overrides=["train.total_iter=9"])) != config_hash(opt)


def test_missing_required_key(text):
    with pytest.raises(ConfigError, match="missing required key"):
        options_from_text(text.replace("name: cfg_test\n", ""))
