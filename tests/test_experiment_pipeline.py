"""A finished run's saved config.yml drives --experiment loading (T is not in the weights)."""
from __future__ import annotations

import os
import stat

import torch

from hidiff.config import options_from_text, save_resolved
from hidiff.utils.checkpoint import save_network_file
from hidiff.models import build_model
from hidiff.runners.weights import experiment_pipeline
from hidiff.utils.atomic import atomic_write_text

RUN = """
name: run_t3
model_type: HI_Diff_S2
datasets:
  val: {name: v, type: PairedImageIRDataset, dataroot_gt: /nonexistent/gt, dataroot_lq: /nonexistent/lq}
network_g: {type: Transformer, dim: 8, num_blocks: [1, 1, 1, 1], num_refinement_blocks: 1, heads: [1, 1, 2, 2], embed_dim: 16}
network_le_dm: {type: latent_encoder_gelu, in_chans: 3, embed_dim: 16, block_num: 1, stage: 2}
network_d: {type: denoising, in_channel: 64, out_channel: 64, inner_channel: 32, block_num: 3}
diffusion_schedule: {timesteps: 3}
"""


def test_experiment_pipeline_uses_the_saved_config(tmp_path):
    opts = options_from_text(RUN, is_train=False)
    model = build_model(opts)
    run = tmp_path / "run_t3"
    save_resolved(opts, run / "config.yml")
    for s in model.save_names:
        save_network_file(run / "models" / f"net_{s}_latest.pth", model.net(s).state_dict())
    pipeline, desc = experiment_pipeline("run_t3", "cpu", experiments_root=tmp_path)
    assert pipeline.diffusion.timesteps == 3 and desc["model_type"] == "HI_Diff_S2"
    x = torch.rand(1, 3, 16, 16)
    noise = torch.randn(1, 16, 64)
    with torch.no_grad():
        torch.testing.assert_close(pipeline.restore(x, noise=noise), model.eval().pipeline().restore(x, noise=noise))
    again, _ = experiment_pipeline("run_t3", "cpu", experiments_root=tmp_path, timesteps=5)
    assert again.diffusion.timesteps == 5


def test_atomic_files_get_normal_permissions(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask


def test_a_checkpoint_of_an_unfinished_run_says_how_far_it_came(tmp_path):
    """Benchmarks scored a run folder's newest checkpoint (iteration 4,121 of 16,000) with nothing to tell it
    from a finished model; the weights now carry the iteration, and benchmarks print it."""
    import yaml

    from engine_tiny_run import tiny_options, write_pairs
    from hidiff.engine.trainer import Trainer
    from hidiff.runners.weights import from_experiment

    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, train={"total_iter": 4})
    Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False)), stop_after=2).fit()
    weights = from_experiment(tmp_path / "experiments", opts["name"])
    assert (weights.iteration, weights.unfinished) == (2, "iteration 2 of 4")
    Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False)), resume="auto").fit()
    weights = from_experiment(tmp_path / "experiments", opts["name"])
    assert (weights.iteration, weights.unfinished) == (4, None)
