"""The latent DDPM: schedules, both official implementations, differentiability."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hidiff.diffusion import build_diffusion, make_beta_schedule
from hidiff.errors import ConfigError


def test_schedules_match_the_official_values():
    # values printed in docs/architecture.md 1.5 (VERIFIED against the official code)
    local = build_diffusion("hidiff_local")
    np.testing.assert_allclose(local.betas.numpy(), [0.1, 0.2271, 0.3543, 0.4814, 0.6086, 0.7357, 0.8629, 0.99],
                               atol=1e-4)
    np.testing.assert_allclose(local.alphas_cumprod.numpy(),
                               [0.9, 0.6956, 0.4491, 0.2329, 0.09117, 0.02409, 3.304e-3, 3.304e-5], rtol=1e-3)
    ldm = build_diffusion("ldm")
    np.testing.assert_allclose(ldm.betas.numpy()[[0, 1, 2, 7, 14, 15]], [0.1, 0.1307, 0.1654, 0.4007, 0.902, 0.99],
                               atol=1e-4)
    assert ldm.alphas_cumprod[-1].item() == pytest.approx(1.79e-7, rel=1e-2)


def test_unknown_schedule_and_preset_fail_clearly():
    with pytest.raises(ConfigError, match="unknown schedule 'cosin'"):
        make_beta_schedule("cosin", 4)
    with pytest.raises(ConfigError, match="unknown 'ldn'"):
        build_diffusion("ldn")
    with pytest.raises(ConfigError, match="did you mean 'timesteps'"):
        build_diffusion("ldm", timestep=4)


def _reference_chain(betas, x_T, cond, predict, parameterization, clip):
    """Straight float64 transcription of the posterior-mean chain (docs/architecture.md 1.5)."""
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    x = x_T.astype(np.float64)
    for i in reversed(range(len(betas))):
        out = predict(x, cond, i)
        if parameterization == "eps":
            x0 = np.sqrt(1 / abar[i]) * x - np.sqrt(1 / abar[i] - 1) * out
        else:
            x0 = out
        if clip:
            x0 = np.clip(x0, -1, 1)
        x = betas[i] * np.sqrt(abar_prev[i]) / (1 - abar[i]) * x0 + \
            (1 - abar_prev[i]) * np.sqrt(alphas[i]) / (1 - abar[i]) * x
    return x


@pytest.mark.parametrize("preset", ["hidiff_local", "ldm"])
def test_chain_equals_independent_transcription(preset):
    ddpm = build_diffusion(preset)
    s = ddpm.settings
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal((2, 4, 8)).astype(np.float32)
    cond = rng.standard_normal((2, 4, 8)).astype(np.float32)

    def predict_np(x, c, i):  # a fixed non-linear "denoiser" of x, c and the step
        return np.tanh(0.7 * x + 0.3 * c + 0.05 * (i + 1))

    def predict_torch(x, c, t):
        step = t.reshape(t.shape[0], -1)[:, :1].unsqueeze(-1)  # (B,1,1)
        i = step - 1 if s.time_encoding == "plus_one_full" else step
        return torch.tanh(0.7 * x + 0.3 * c + 0.05 * (i + 1))

    got = ddpm.sample(predict_torch, torch.from_numpy(cond), torch.from_numpy(x_T)).numpy()
    want = _reference_chain(ddpm.betas.double().numpy(), x_T, cond, predict_np, s.parameterization,
                            s.clip_denoised)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_time_encodings_follow_the_official_denoisers():
    x = torch.zeros(2, 16, 8)
    t_local = build_diffusion("hidiff_local").time_input(x, 3)
    assert t_local.shape == x.shape and torch.all(t_local == 4)          # i + 1, full shape
    t_ldm = build_diffusion("ldm").time_input(x, 3)
    assert t_ldm.shape == (2, 16) and torch.all(t_ldm == 3)               # index, (B, N)


def test_q_sample_quirk_is_a_named_option():
    z, eps = torch.ones(1, 2, 2), torch.zeros(1, 2, 2)
    official = build_diffusion("hidiff_local")
    fixed = build_diffusion("hidiff_local", q_sample_uses_alpha_bar=False)
    abar_T = official.alphas_cumprod[-1].item()
    assert official.q_sample(z, eps)[0, 0, 0].item() == pytest.approx(abar_T)
    assert fixed.q_sample(z, eps)[0, 0, 0].item() == pytest.approx(abar_T ** 0.5)


def test_real_networks_local_prior_is_clamped_and_ldm_ends_at_x0():
    from hidiff.archs import build_network
    torch.manual_seed(0)
    cond = torch.randn(2, 16, 64)
    x_T = torch.randn(2, 16, 64)
    den = build_network({"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                         "block_num": 3, "group": 4})
    with torch.no_grad():
        z = build_diffusion("hidiff_local", timesteps=4).sample(den, cond, x_T)
    assert z.min() >= -1 and z.max() <= 1  # docs/quirks.md, quirk 11: the final prior is the clamped x0
    simple = build_network({"type": "simple_denoise", "n_feats": 16, "n_denoise_res": 2})
    ldm = build_diffusion("ldm", timesteps=4)
    with torch.no_grad():
        x = x_T
        for i in reversed(range(1, 4)):
            x = ldm.step(simple, x, cond, i)
        expected = simple(x, cond, ldm.time_input(x, 0))
        got = ldm.sample(simple, cond, x_T)
    torch.testing.assert_close(got, expected)  # z_hat = net_d(x_1, c, 0) exactly


def test_chain_is_differentiable_end_to_end():
    from hidiff.archs import build_network
    den = build_network({"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                         "block_num": 3, "group": 4})
    cond = torch.randn(1, 16, 64, requires_grad=True)
    z = build_diffusion("hidiff_local", timesteps=3, clip_denoised=False).sample(den, cond, torch.randn(1, 16, 64))
    z.abs().mean().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert all(p.grad is not None for p in den.parameters() if p.requires_grad)


@pytest.mark.parametrize("apply_ldm, official_t", [(False, 8), (True, 16)])
def test_yaml_without_timesteps_takes_the_implementations_official_t(apply_ldm, official_t):
    """Left out, diffusion_schedule.timesteps is the chosen implementation's own T (GoPro 8, RealBlur 16)."""
    from hidiff.config.schema import DiffusionOptions
    from hidiff.config.typed import from_dict
    opts = from_dict(DiffusionOptions, {"apply_ldm": apply_ldm}, "diffusion_schedule")
    assert opts.build().timesteps == official_t
    given = from_dict(DiffusionOptions, {"apply_ldm": apply_ldm, "timesteps": 3}, "diffusion_schedule")
    assert given.build().timesteps == 3
    with pytest.raises(ConfigError, match="diffusion_schedule.timesteps"):
        from_dict(DiffusionOptions, {"apply_ldm": apply_ldm, "timesteps": "many"}, "diffusion_schedule")
