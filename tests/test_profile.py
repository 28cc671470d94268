"""The profiler: a real subprocess run on a tiny option file, reference MAC counts, and its measuring parts."""
from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from conftest import PY, REPO, run_env
from hidiff.profiling import (ProfileSpec, count_cases, count_flops, parse_size, reference_formulation,
                              time_call)
from procs import run_checked

TINY_S2 = """
name: tiny_profile
model_type: HI_Diff_S2
datasets:
  train: {name: unused, type: SyntheticBlurDataset, sharp_root: no_photos, gt_size: 32, batch_size_per_gpu: 1}
network_g: {type: Transformer, dim: 8, num_blocks: [1, 1, 1, 1], num_refinement_blocks: 1, heads: [1, 1, 2, 2],
            embed_dim: 16}
network_le: {type: latent_encoder_gelu, in_chans: 6, embed_dim: 16, block_num: 1, stage: 1}
network_le_dm: {type: latent_encoder_gelu, in_chans: 3, embed_dim: 16, block_num: 1, stage: 2}
network_d: {type: denoising, in_channel: 64, out_channel: 64, inner_channel: 32, block_num: 3, group: 4}
diffusion_schedule: {apply_ldm: false, schedule: linear, timesteps: 3, linear_start: 0.1, linear_end: 0.99}
train:
  total_iter: 10
  optim_total: {type: AdamW, lr: 2e-4}
  pixel_opt: {type: L1Loss}
  pixel_diff_opt: {type: L1Loss}
"""


def test_profile_script_prints_table_and_json_line(tmp_path):
    opt = tmp_path / "tiny.yml"
    opt.write_text(TINY_S2)
    out_json = tmp_path / "profile.json"
    cmd = [PY, str(REPO / "scripts" / "profile.py"), "-opt", str(opt), "--size", "30x44", "--runs", "2",
           "--warmup", "1", "--threads", "1", "--cases", "net_g,pipeline", "--train-step", "--json", str(out_json)]
    proc = run_checked(cmd, cwd=tmp_path, env=run_env(), timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert "| case | params | GMAC | GFLOP |" in proc.stdout
    assert "(padded to 32x48)" in lines[0]
    result = json.loads(lines[-1])
    assert json.loads(out_json.read_text()) == result
    assert {"option_file", "model_type", "size_hw", "padded_hw", "device", "machine", "cases",
            "networks_params"} <= set(result)
    assert result["size_hw"] == [30, 44] and result["padded_hw"] == [32, 48]
    cases = {c["name"]: c for c in result["cases"]}
    assert list(cases) == ["net_g", "pipeline", "train_step"]
    tiny_g = sum(p.numel() for p in _tiny_net_g().parameters())
    assert cases["net_g"]["params"] == tiny_g == result["networks_params"]["net_g"]
    nets = result["networks_params"]
    assert set(nets) == {"net_g", "net_le", "net_le_dm", "net_d"}
    assert cases["pipeline"]["params"] == nets["net_g"] + nets["net_le_dm"] + nets["net_d"]
    for c in cases.values():
        assert c["flops"] == 2 * c["macs"] > 0
        lat = c["latency"]
        assert lat["runs"] == 2 and len(lat["samples_ms"]) == 2
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"]
        mem = c["memory"]
        assert mem["peak_rss_bytes"] >= mem["rss_before_bytes"] > 50 * 2**20  # torch + model are resident
        assert c["threads"] == 1
    # a training step costs more than a forward pass and holds activations for the backward pass
    assert cases["train_step"]["macs"] > cases["pipeline"]["macs"]


def test_pipeline_cost_is_the_sum_of_its_parts(tmp_path):
    opt = tmp_path / "tiny.yml"
    opt.write_text(TINY_S2)
    counts = count_cases(ProfileSpec(str(opt), (30, 44)))
    assert [k for k in counts if not k.startswith("_")] == ["net_g", "net_le", "net_le_dm", "net_d", "chain",
                                                             "pipeline"]
    assert counts["chain"]["macs"] == 3 * counts["net_d"]["macs"]  # T = 3 denoiser calls
    assert counts["pipeline"]["macs"] == sum(counts[k]["macs"] for k in ("net_g", "net_le_dm", "chain"))


def _tiny_net_g() -> nn.Module:
    from hidiff.archs import build_network
    return build_network({"type": "Transformer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                          "heads": [1, 1, 2, 2], "embed_dim": 16})


def test_profile_script_reports_bad_input(tmp_path):
    proc = run_checked([PY, REPO / "scripts" / "profile.py", "-opt", REPO / "options" / "test_gopro.yml",
                        "--size", "big"], env=run_env(), timeout=300, returncode=2)
    assert "--size" in proc.stderr and "HxW" in proc.stderr


# ----------------------------------------------------------------------------- reference figures (docs/architecture.md 1.6)
def _gmac(counts, name):
    return round(counts[name]["macs"] / 1e9, 2)


def test_gopro_macs_and_params_match_reference():
    counts = count_cases(ProfileSpec(str(REPO / "options" / "test_gopro.yml"), (256, 256)))
    assert counts["pipeline"]["params"] == 28_486_900
    assert counts["_networks"] == {"net_g": 25_298_923, "net_le_dm": 558_040, "net_d": 2_629_937}
    assert _gmac(counts, "net_g") == 140.21
    assert _gmac(counts, "net_le_dm") == 2.08
    assert _gmac(counts, "chain") == 0.34
    # 142.63 in docs/architecture.md 1.6 is the sum of the rounded parts; the exact total is 142.6197
    total = counts["pipeline"]["macs"]
    assert total == counts["net_g"]["macs"] + counts["net_le_dm"]["macs"] + counts["chain"]["macs"]
    assert abs(total / 1e9 - 142.63) < 0.015


def test_gopro_720p_and_stage1_macs_match_reference():
    counts = count_cases(ProfileSpec(str(REPO / "options" / "test_gopro.yml"), (720, 1280), cases=["net_g", "net_le_dm"]))
    assert round(counts["net_g"]["macs"] / 1e9, 1) == 1971.6
    assert round(counts["net_le_dm"]["macs"] / 1e9, 1) == 29.2
    s1 = count_cases(ProfileSpec(str(REPO / "options" / "stage1_gopro.yml"), (256, 256), cases=["net_le"]))
    assert _gmac(s1, "net_le") == 2.19 and s1["net_le"]["params"] == 585_688


def test_realblur_and_swintormer_macs_match_reference():
    rb = count_cases(ProfileSpec(str(REPO / "options" / "test_realblur.yml"), (256, 256)))
    assert (_gmac(rb, "net_g"), _gmac(rb, "net_le_dm"), _gmac(rb, "chain")) == (121.72, 3.75, 0.10)
    assert rb["pipeline"]["params"] == 24_182_959
    sw = count_cases(ProfileSpec(str(REPO / "options" / "train_swintormer_dpdd.yml"), (256, 256),
                                 cases=["net_g"]))
    assert _gmac(sw, "net_g") == 33.15 and sw["net_g"]["params"] == 25_177_224


# ----------------------------------------------------------------------------- the measuring parts
def test_count_flops_follows_the_two_flops_per_mac_convention():
    conv, lin = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Linear(8, 5)
    x = torch.zeros(2, 3, 16, 16)
    macs_conv = 2 * 16 * 16 * 8 * 3 * 9        # batch x pixels x out x in x k^2
    macs_lin = 2 * 16 * 16 * 5 * 8
    flops = count_flops(lambda: lin(conv(x).permute(0, 2, 3, 1)))
    assert flops == 2 * (macs_conv + macs_lin)


def test_reference_formulation_switches_and_restores_fast_paths():
    from hidiff.archs import build_network
    net = _tiny_net_g()
    fused = [m for m in net.modules() if isinstance(getattr(m, "fused", None), bool)]
    assert fused and all(m.fused for m in fused)
    with reference_formulation([net]):
        assert not any(m.fused for m in fused)
    assert all(m.fused for m in fused)
    assert build_network is not None


def test_time_call_statistics():
    t = time_call(lambda: time.sleep(0.05), warmup=1, runs=3)
    assert t.runs == 3 and len(t.samples_ms) == 3
    assert 50.0 <= t.min_ms <= t.median_ms <= t.max_ms  # sleep() never returns early
    # sleeping does not use the CPU; process time counts every thread of this process, so the margin is wide
    # (50 ms of wall time per run) for whatever else the pytest process runs meanwhile on a loaded machine
    assert t.iqr_ms >= 0 and t.cpu_ms < t.median_ms
    with pytest.raises(ValueError):
        time_call(lambda: None, runs=0)


_PEAK_PROBE = """
import json, numpy as np
from hidiff.profiling import PeakMemory
meter = PeakMemory("cpu")
meter.reset()
block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page touched
del block
print(json.dumps(meter.read()))
"""


def test_peak_memory_sees_a_temporary_allocation():
    """In a fresh process, as the profiler measures every case: a long-lived process (this
    pytest run) may serve the 64 MiB from pages an earlier test freed, and RSS would not move."""
    out = run_checked([PY, "-c", _PEAK_PROBE], cwd=REPO, env=run_env(), timeout=300)
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    assert mem["method"].startswith(("VmHWM", "ru_maxrss")), mem
    assert mem["delta_bytes"] >= 60 * 2**20, mem


_IGNORED_RESET_PROBE = """
import json, sys, numpy as np
from pathlib import Path
from hidiff.profiling import memory
block = np.ones(128 * 2**20 // 8)  # raise the high-water mark, then give the pages back
del block
memory._CLEAR_REFS = Path(sys.argv[1])  # a plain file: the write succeeds and resets nothing
meter = memory.PeakMemory("cpu")
meter.reset()
print(json.dumps(meter.read()))
"""


def test_peak_memory_says_when_the_kernel_ignored_the_reset(tmp_path):
    """A reset that did not take must not be passed off as a measurement of the work alone."""
    out = run_checked([PY, "-c", _IGNORED_RESET_PROBE, tmp_path / "clear_refs"], cwd=REPO, env=run_env(),
                      timeout=300)
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    assert "ignored the reset" in mem["method"], mem
    assert mem["delta_bytes"] >= 100 * 2**20, mem  # the lifetime peak, honestly labelled


def test_parse_size():
    assert parse_size("720x1280") == (720, 1280) and parse_size("256") == (256, 256)
    from hidiff.errors import ConfigError
    with pytest.raises(ConfigError):
        parse_size("0x5")


def test_scripts_folder_still_finds_the_standard_profile_module():
    """scripts/ is on sys.path for every script there; torch imports cProfile -> profile."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import profile, cProfile; "
            "assert hasattr(profile, 'run') and hasattr(profile, 'Profile'), profile.__file__; print('ok')")
    proc = run_checked([PY, "-c", code, REPO / "scripts"], env=run_env(), timeout=300)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_the_train_step_case_recomputes_the_feed_forward_as_the_trainer_does(tmp_path):
    """speed.py's and hidiff-profile's training step skipped train.recompute_ffn (default true), so their
    'fast' step was not the trainer's default path."""
    from hidiff.archs.fast.gdfn import FastGDFN
    from hidiff.profiling.cases import build_cases
    from hidiff.profiling.profiler import build_profile_model, load_profile_options

    opt = tmp_path / "tiny.yml"
    opt.write_text(TINY_S2)
    for on in (True, False):
        options = load_profile_options(str(opt), [f"train.recompute_ffn={str(on).lower()}"])
        model = build_profile_model(options, torch.device("cpu"))
        build_cases(model, (32, 32), batch=1, device=torch.device("cpu"), names=["train_step"], options=options)
        blocks = [m for net in model.trainable.values() for m in net.modules() if isinstance(m, FastGDFN)]
        assert blocks and {m.recompute_hidden for m in blocks} == {on}


_WARMUP_PROBE = """
import json, numpy as np, torch
from hidiff.profiling import profiler
from hidiff.profiling.cases import Case
calls = []
def run():
    calls.append(1)
    if len(calls) == 1:  # the warm-up call alone touches 256 MiB
        block = np.ones(256 * 2**20 // 8)
        del block
profiler.load_profile_options = lambda opt, overrides: None
profiler.build_profile_model = lambda options, device: torch.nn.Linear(1, 1)
profiler.build_cases = lambda *a, **k: [Case("x", "x", [], run)]
r = profiler.measure_case(profiler.ProfileSpec(opt="unused", size=(8, 8), warmup=1, runs=2), "x")
print(json.dumps({"memory": r["memory"], "latency": r["latency"], "calls": len(calls)}))
"""


def test_the_profilers_peak_is_that_of_the_calls_after_the_warm_up():
    """meter.reset() ran before the warm-up calls, so a case's peak included its (cold) warm-up call."""
    out = run_checked([PY, "-c", _WARMUP_PROBE], cwd=REPO, env=run_env(), timeout=300)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["calls"] == 3 and r["latency"]["warmup"] == 1 and r["latency"]["runs"] == 2
    assert r["memory"]["method"].startswith("VmHWM after"), r
    assert r["memory"]["delta_bytes"] < 64 * 2**20, r


def _result(in_process: bool) -> dict:
    from hidiff.profiling.machine import describe_machine
    latency = {"median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0, "iqr_ms": 0.0, "cpu_ms": 1.0, "warmup": 1, "runs": 2}
    return {"size_hw": [32, 32], "padded_hw": [32, 32], "device": "cpu", "option_file": "x.yml", "model_type": "M",
            "batch": 1, "dtype": "float32", "machine": describe_machine("cpu"), "mac_convention": "1 MAC = 2 FLOPs",
            "in_process": in_process,
            "cases": [{"label": "net_g", "params": 1, "macs": 1, "flops": 2, "macs_executed": 1, "latency": latency,
                       "memory": {"peak_rss_bytes": 2**30, "delta_bytes": 2**20}}]}


def test_the_table_says_where_the_cases_were_measured():
    from hidiff.profiling.report import format_table
    assert "each case in a fresh process" in format_table(_result(False))
    text = format_table(_result(True))
    assert "fresh process" not in text and "every case in the profiler's own process (--in-process" in text


def test_the_train_step_case_takes_the_trainers_layout_and_checkpointing(tmp_path):
    """train.channels_last (and train.checkpoint_levels) were ignored by the profiler's training step."""
    from hidiff.profiling.cases import build_cases
    from hidiff.profiling.profiler import build_profile_model, load_profile_options

    opt = tmp_path / "tiny.yml"
    opt.write_text(TINY_S2)
    for on in (False, True):
        flags = [f"train.channels_last={str(on).lower()}"] + (["train.checkpoint_levels=[1]"] if on else [])
        options = load_profile_options(str(opt), flags)
        model = build_profile_model(options, torch.device("cpu"))
        (case,) = build_cases(model, (32, 32), batch=1, device=torch.device("cpu"), names=["train_step"],
                              options=options)
        weights = [p for p in model.net("g").parameters() if p.dim() == 4 and min(p.shape[1:]) > 1]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) == on for p in weights)
        assert bool(model.net("g").checkpoint_levels) == on
        case.run()  # one step in that layout
