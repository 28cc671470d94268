"""benchmarks/train_speed.py and its machinery: the timed step is the trainer's step, variants interleave."""
from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import PY, REPO, run_env
from hidiff.errors import ConfigError
from hidiff.profiling.gpu_checks import TINY
from hidiff.profiling.train_speed import parse_batch_size
from hidiff.profiling.train_step import StepSpec, TrainStep, UnsupportedVariant, time_interleaved
from procs import run_checked

S1 = str(REPO / "options" / "stage1_gopro.yml")
S2 = str(REPO / "options" / "stage2_gopro.yml")


def tiny(stage_blocks=("network_g", "network_le", "network_le_dm", "network_d")) -> list:
    return [f"{block}.{k}={v}".replace(" ", "") for block in stage_blocks for k, v in TINY[block].items()]


def test_plain_and_fast_formulations_take_the_same_training_step():
    """Both formulations compute the official maths: same init, same data -> same losses over steps."""
    losses = {}
    for formulation in ("plain", "fast"):
        ts = TrainStep(StepSpec(opt=S2, batch=2, size=(32, 32), formulation=formulation, overrides=tiny()))
        out = []
        for k in range(2):
            ts.set_data(10 + k)
            torch.manual_seed(20 + k)
            out.append(ts.step())
        losses[formulation] = out
    for a, b in zip(losses["plain"], losses["fast"]):
        assert set(a) == {"grad_norm", "l_pix", "l_diff", "total"}
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # the second step saw updated weights: the optimiser stepped
    assert losses["fast"][0]["total"] != losses["fast"][1]["total"]


def test_mixed_precision_on_cpu_is_refused_as_unsupported_and_bad_specs_name_the_field():
    with pytest.raises(UnsupportedVariant, match="needs CUDA"):
        TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), precision="bf16", overrides=tiny(("network_g",
                                                                                            "network_le"))))
    with pytest.raises(ConfigError, match="formulation"):
        StepSpec(opt=S1, batch=1, size=(16, 16), formulation="official")
    with pytest.raises(ConfigError, match="BATCHxHxW"):
        parse_batch_size("4x128x")
    assert parse_batch_size("2x256") == (2, (256, 256))


def test_time_interleaved_rotates_the_order_every_round():
    calls = []
    steps = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    res = time_interleaved(steps, warmup=1, repeats=3)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert set(res["variants"]) == {"a", "b", "c"}
    assert all(len(v["samples_s"]) == 3 for v in res["variants"].values())
    with pytest.raises(ConfigError):
        time_interleaved(steps, repeats=0)


def test_benchmark_script_reports_speed_ratio_and_fresh_process_memory(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [PY, str(REPO / "benchmarks" / "train_speed.py"), "--stages", "2", "--sizes", "1x32x32", "--repeats", "2",
           "--threads", "1", "--json", str(out)] + [a for o in tiny() for a in ("-o", "2:" + o)]
    proc = run_checked(cmd, env=run_env(), timeout=600)
    assert "| stage 2, 1x32x32 | plain |" in proc.stdout and "speed vs plain" in proc.stdout
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["threads"] == 1 and data["machine"]["load_average"] is not None
    # as the trainer on a CPU: glibc keeps freed memory (train.keep_cpu_memory), said in the header
    assert data["freed_memory_kept"] is True and "freed memory kept for reuse (as the trainer)" in proc.stdout
    (res,) = data["results"]
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {"plain", "fast", "fast+ckpt"}
    for label in ("plain", "fast"):
        r = rows[label]
        assert len(r["samples_s"]) == 2 and r["median_s"] > 0
        assert r["samples_per_s"] == pytest.approx(1 / r["median_s"])
        mem = r["memory"]  # the memory the warm-up step freed was given back first: the delta is the step's own
        assert mem["peak_rss_bytes"] >= mem["rss_before_bytes"] > 0 and mem["delta_bytes"] >= 0
        assert mem["freed_memory_released"] is True
    assert "given back to the OS before it (malloc_trim)" in proc.stdout
    assert rows["plain"]["speedup_vs_plain"] == 1.0 and rows["plain"]["memory_vs_plain"] == 1.0
    ckpt = rows["fast+ckpt"]
    assert "skipped" in ckpt or ckpt["checkpointing"] is True


def test_benchmark_script_rejects_bad_arguments_before_measuring():
    proc = run_checked([PY, REPO / "benchmarks" / "train_speed.py", "--stages", "3"], env=run_env(), timeout=120,
                       returncode=2)
    assert "--stages" in proc.stderr
    proc = run_checked([PY, REPO / "benchmarks" / "train_speed.py", "--no-checkpointing", "--checkpoint-levels", "1"],
                       env=run_env(), timeout=120, returncode=2)
    assert "--no-checkpointing leaves the row out: give one of them" in proc.stderr
    proc = run_checked([PY, REPO / "benchmarks" / "train_speed.py", "--checkpoint-levels", "5"], env=run_env(),
                       timeout=120, returncode=2)
    assert "--checkpoint-levels: unknown level 5" in proc.stderr
    proc = run_checked([PY, REPO / "benchmarks" / "train_speed.py", "-o", "2:train.checkpoint_levels=[1,refinement]"],
                       env=run_env(), timeout=120, returncode=2)
    assert ("-o train.checkpoint_levels=[1,refinement]: train.checkpoint_levels is set by each variant (row) of the "
            "benchmark; use --checkpoint-levels" in proc.stderr), proc.stderr


def test_the_option_file_settings_apply_unless_the_spec_sets_them():
    """TrainStep ran without the option file's (or -o's) train.checkpoint_levels and train.amp, which the
    trainer honours; a spec's own value (a benchmark row) still replaces them."""
    from hidiff.archs.unet_levels import checkpoint_stages
    from hidiff.profiling.train_step import keeps_memory
    s1 = tiny(("network_g", "network_le"))
    ckpt = s1 + ["train.checkpoint_levels=[1,refinement]"]
    ts = TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=ckpt))
    assert ts.checkpoint_levels == [1, "refinement"] and ts.checkpointed == ["net_g"]
    assert ts.model.net("g").checkpoint_levels == checkpoint_stages([1, "refinement"])
    assert TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=ckpt, checkpoint_levels=[])).checkpointed == []
    assert TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=ckpt,
                              checkpoint_levels=[4])).checkpoint_levels == [4]
    # train.amp as the trainer takes it: fp32 on a CPU (with a warning), not refused as a bf16 row would be
    amp = TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=s1 + ["train.amp.enabled=true"]))
    assert amp.precision == "fp32" and amp.amp.requested and not amp.amp.enabled
    # train.keep_cpu_memory (applied by the measuring process): the file's, unless the spec says
    off = s1 + ["train.keep_cpu_memory=false"]
    assert keeps_memory(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=s1)) is True  # the trainer's default
    assert keeps_memory(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=off)) is False
    assert keeps_memory(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=off, keep_memory=True)) is True
    assert keeps_memory(StepSpec(opt=S1, batch=1, size=(16, 16), device="cuda", keep_memory=True)) is False


def test_train_compile_is_honoured_with_the_specs_backend():
    """The dry run's compile check goes through train.compile=true (the eager backend needs no C++ build)."""
    spec = StepSpec(opt=S1, batch=1, size=(16, 16), compile_backend="eager",
                    overrides=tiny(("network_g", "network_le")) + ["train.compile=true"])
    ts = TrainStep(spec)
    assert ts.step_module is not ts.model and getattr(ts.step_module, "_orig_mod", None) is ts.model
    assert StepSpec.from_json(spec.to_json()) == spec


def test_the_benchmark_rows_set_precision_checkpointing_and_malloc_so_overrides_of_them_are_refused():
    from hidiff.profiling.train_speed import SpeedCase, refuse_variant_keys, variant_specs
    case = SpeedCase("stage 1", S1, 1, (16, 16))
    specs = variant_specs(case, checkpoint_levels=[1])
    assert [(s.label, s.precision, s.checkpoint_levels) for s in specs] == [
        ("plain", "fp32", []), ("fast", "fp32", []), ("fast+ckpt[1]", "fp32", [1])]
    refuse_variant_keys(["train.recompute_ffn=false", "network_g.dim=8", "train.total_iter=3"])
    for item, flag in (("train.checkpoint_levels=[1]", "--checkpoint-levels"),
                       ("train.amp.enabled=true", "--precisions"), ("train.amp={enabled: true}", "--precisions"),
                       ("Train.Keep_CPU_Memory=false", "--system-malloc"), ("train={total_iter: 3}", "--checkpoint-levels")):
        with pytest.raises(ConfigError, match=f"-o {re.escape(item)}: .* is set by each variant .* use {flag}"):
            variant_specs(case, overrides=[item])


@pytest.mark.slow
def test_the_step_delta_is_the_steps_own_memory_whether_or_not_freed_memory_is_kept():
    """With freed memory kept (the CPU default) the warm-up step's activations stayed resident, so the RSS
    before the measured step held them and its delta was a fraction of the system malloc's (17 vs 84 MiB)."""
    from hidiff.profiling.train_step import memory_in_subprocess
    mem = {}
    for keep in (False, True):
        r = memory_in_subprocess(StepSpec(opt=S1, batch=2, size=(128, 128), threads=1, keep_memory=keep,
                                          overrides=tiny(("network_g", "network_le"))))
        assert r["freed_memory_kept"] is keep
        mem[keep] = r["memory"]
        assert mem[keep]["freed_memory_released"] is True and mem[keep]["method"].startswith("VmHWM after"), r
    assert mem[False]["delta_bytes"] > 32 * 2**20, mem  # activations of 2x128x128 through a U-Net
    assert 0.5 < mem[True]["delta_bytes"] / mem[False]["delta_bytes"] < 2.0, mem


def test_the_step_updates_the_ema_as_the_trainer_and_refuses_accumulation():
    """TrainStep left out the trainer's EMA update (train.ema_decay) and timed one micro-batch as a whole
    step under train.grad_accum_steps > 1."""
    s1 = tiny(("network_g", "network_le"))
    ts = TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=s1 + ["train.ema_decay=0.5"]))
    before = {k: v.clone() for k, v in ts.ema["g"].shadow.items()}
    ts.step()
    live = ts.model.trainable["g"].state_dict()
    moved = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, live[k])]
    assert moved, "the step changed no weight"
    for k in moved:         # shadow = 0.5 * before + 0.5 * live after one step
        assert torch.allclose(ts.ema["g"].shadow[k], 0.5 * before[k] + 0.5 * live[k].float(), atol=1e-6), k
    assert TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=s1)).ema == {}
    with pytest.raises(UnsupportedVariant, match="train.grad_accum_steps 2: a timed step is one forward"):
        TrainStep(StepSpec(opt=S1, batch=1, size=(16, 16), overrides=s1 + ["train.grad_accum_steps=2"]))
