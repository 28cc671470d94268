"""Stage 1 / stage 2 / prior-free models: what is optimised, what is frozen, losses fall."""
from __future__ import annotations

import pytest
import torch

from hidiff.config import options_from_text
from hidiff.errors import ConfigError
from hidiff.losses import L1Loss
from hidiff.models.hidiff_s1_model import HIDiffStage1
from hidiff.models.hidiff_s2_model import HIDiffStage2
from hidiff.engine.stage_link import resolve_pretrained
from tiny import tiny_diffusion, tiny_networks


def fixed_batch(seed=0, n=2, size=32):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    gt = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    lq = torch.nn.functional.avg_pool2d(gt, 5, stride=1, padding=2)  # a blur the nets can learn to undo
    return {"lq": lq, "gt": gt}


def fixed_loss(model, batch):
    """The loss with the stage-2 noise fixed, so before/after values are comparable."""
    torch.manual_seed(123)
    with torch.no_grad():
        return {k: v.item() for k, v in model(batch).items()}


def train_steps(model, batch, steps=20, lr=1e-3):
    """(loss before, loss after) ``steps`` Adam steps on one fixed batch."""
    before = fixed_loss(model, batch)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        out = model(batch)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    return before, fixed_loss(model, batch)


def test_stage1_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    nets = tiny_networks()
    model = HIDiffStage1(nets["g"], nets["le"], {"pixel_opt": L1Loss()})
    before, after = train_steps(model, fixed_batch())
    assert after["total"] < 0.8 * before["total"], (before, after)
    assert set(dict(model.named_children())["trainable"].keys()) == {"g", "le"}


def test_stage2_freezes_net_le_outside_the_optimised_module_and_loss_falls():
    torch.manual_seed(0)
    nets = tiny_networks()
    le_before = {k: v.clone() for k, v in nets["le"].state_dict().items()}
    model = HIDiffStage2(nets["g"], nets["le_dm"], nets["d"], tiny_diffusion(), net_le=nets["le"],
                         losses={"pixel_opt": L1Loss(), "pixel_diff_opt": L1Loss()})
    # net_le is neither a registered submodule (DDP never sees it) nor trainable
    assert all(not n.startswith("frozen") for n, _ in model.named_parameters())
    assert not any(p is q for p in model.parameters() for q in nets["le"].parameters())
    assert all(not p.requires_grad for p in nets["le"].parameters())
    before, after = train_steps(model, fixed_batch(size=16), steps=10, lr=2e-3)
    assert after["total"] < before["total"], (before, after)
    assert after["l_pix"] < 0.8 * before["l_pix"] and after["l_diff"] < before["l_diff"], (before, after)
    for k, v in nets["le"].state_dict().items():
        assert torch.equal(v, le_before[k]), k
    out = model(fixed_batch())
    assert set(out) == {"l_pix", "l_diff", "total"}
    model.to(torch.float64)  # .to() also moves the frozen net
    assert next(nets["le"].parameters()).dtype == torch.float64


def test_stage_restore_shapes_and_oracle_prior():
    nets = tiny_networks()
    s1 = HIDiffStage1(nets["g"], nets["le"], {"pixel_opt": L1Loss()}).eval()
    x = torch.rand(1, 3, 13, 19)
    assert s1.pipeline().restore(x, gt=x).shape == x.shape
    with pytest.raises(ValueError, match="gt is required"):
        s1.pipeline().restore(x)
    s2 = HIDiffStage2(nets["g"], nets["le_dm"], nets["d"], tiny_diffusion()).eval()
    assert s2.pipeline().restore(x, noise=torch.zeros(1, 16, 64)).shape == x.shape


def test_save_load_is_bitwise(tmp_path):
    from hidiff.utils.checkpoint import load_network, save_network_file
    nets = tiny_networks()
    other = tiny_networks()
    for k in nets:
        save_network_file(tmp_path / f"net_{k}.pth", nets[k].state_dict())
        load_network(other[k], tmp_path / f"net_{k}.pth")
        for (n1, a), (n2, b) in zip(nets[k].state_dict().items(), other[k].state_dict().items()):
            assert n1 == n2 and torch.equal(a, b)


STAGE2 = """
name: s2
model_type: HI_Diff_S2
datasets:
  train: {{name: t, type: SyntheticBlurDataset, sharp_root: {root}, gt_size: 32}}
network_g: {{type: Transformer, dim: 8, num_blocks: [1, 1, 1, 1], num_refinement_blocks: 1, heads: [1, 1, 2, 2], embed_dim: 16}}
network_le: {{type: latent_encoder_gelu, in_chans: 6, embed_dim: 16, block_num: 1, stage: 1}}
network_le_dm: {{type: latent_encoder_gelu, in_chans: 3, embed_dim: 16, block_num: 1, stage: 2}}
network_d: {{type: denoising, in_channel: 64, out_channel: 64, inner_channel: 32, block_num: 3}}
diffusion_schedule: {{timesteps: 3}}
path: {{experiments_root: {root}/exp, stage1: my_stage1}}
train: {{total_iter: 2, optim_total: {{type: AdamW, lr: 1.0e-3}}, pixel_opt: {{type: L1Loss}}, pixel_diff_opt: {{type: L1Loss}}}}
"""


def test_stage2_names_its_stage1_run_and_fails_clearly_when_missing(tmp_path):
    opt = options_from_text(STAGE2.format(root=tmp_path))
    with pytest.raises(ConfigError, match="stage-1 run 'my_stage1' was not found"):
        resolve_pretrained(opt)
    models = tmp_path / "exp" / "my_stage1" / "models"
    models.mkdir(parents=True)
    (models / "net_g_100.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no net_le checkpoint"):
        resolve_pretrained(opt)
    for it in (100, 200):
        (models / f"net_g_{it}.pth").write_bytes(b"x")
        (models / f"net_le_{it}.pth").write_bytes(b"x")
    specs = resolve_pretrained(opt)
    assert specs["g"].path.name == "net_g_200.pth" and specs["le"].path.name == "net_le_200.pth"
    (models / "net_le_latest.pth").write_bytes(b"x")
    assert resolve_pretrained(opt)["le"].path.name == "net_le_latest.pth"


def test_stage2_trains_net_g_jointly_at_the_optimisers_full_learning_rate(tmp_path):
    """docs/quirks.md, quirk 14: stage 2 updates net_g with the diffusion networks in one optimiser group at
    train.optim_total.lr (no smaller rate for the pretrained U-Net), and leaves the stage-1 encoder frozen. One
    plain SGD step (no momentum, no clipping): each parameter moves by exactly lr x its gradient."""
    import yaml

    from engine_tiny_run import tiny_s2_options, write_pairs
    from hidiff.engine.trainer import Trainer
    from hidiff.utils.checkpoint import safe_load

    lr = 0.25
    write_pairs(tmp_path / "data")
    opts = tiny_s2_options(tmp_path, train={"total_iter": 1, "use_grad_clip": False,
                                            "optim_total": {"type": "SGD", "lr": lr}},
                           logger={"save_checkpoint_freq": 1, "print_freq": 1})
    trainer = Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False)))
    trainer.fit()
    (group,) = trainer.optimizer.param_groups
    assert group["initial_lr"] == lr
    in_group = {id(p) for p in group["params"]}
    start = {n: safe_load(tmp_path / "stage1" / f"net_{n}.pth")["params"] for n in ("g", "le")}
    for name in ("g", "le_dm", "d"):
        net = trainer.model.net(name)
        assert all(id(p) in in_group for p in net.parameters()), f"net_{name} is not optimised"
    g = trainer.model.net("g")
    moved = 0
    for k, p in g.named_parameters():
        step = start["g"][k] - p.detach()
        assert p.grad is not None, k
        torch.testing.assert_close(step, lr * p.grad, rtol=1e-5, atol=1e-7, msg=f"net_g.{k}")
        moved += int(step.abs().max() > 0)
    assert moved > 0
    le = trainer.model.net("le")
    assert not any(id(p) in in_group for p in le.parameters())
    for k, v in le.state_dict().items():
        assert torch.equal(v, start["le"][k]), f"net_le.{k} changed in stage 2"
