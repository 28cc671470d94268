"""Build a restoration pipeline from weight files alone (no YAML).

The authors release three files per model (``net_g.pth``, ``net_le_dm.pth``,
``net_d.pth``, each ``{'params': state_dict}``), and users keep asking which
config goes with which file (docs/architecture.md 3.3).  The state_dicts say it
themselves: every hyper-parameter of the three HI-Diff networks is a tensor
shape or a key count (widths, block counts, heads, FFN width, prior tokens),
and the denoiser type tells the diffusion implementation (``denoising`` ->
the local eps-predicting chain, ``simple_denoise`` -> the LDM x0 chain).
:func:`recognise` infers all of it, and every inferred network is rebuilt and
checked key-by-key and shape-by-shape before loading (strict), so a wrong guess
is an error, never a silently half-loaded model.

Two things are not stored in any weight file and are taken from the official
configurations: the number of diffusion steps (8 for ``denoising``, 16 for
``simple_denoise``; override with ``timesteps=``) and ``simple_denoise``'s
``timesteps`` time divisor (official default 5, never set in the shipped files).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from hidiff.archs import build_network
from hidiff.archs.unet_levels import STAGES
from hidiff.diffusion.latent_ddpm import build_diffusion
from hidiff.errors import CheckpointError, ConfigError
from hidiff.inference.pipeline import RestorationPipeline
from hidiff.utils.checkpoint import check_finite, load_state_into, safe_load, select_params, strip_prefixes

StateDict = Mapping[str, Tensor]
PathLike = Union[str, Path]

NET_FILES = ("net_g", "net_le_dm", "net_d")
_ALIASES = {"g": "net_g", "le_dm": "net_le_dm", "d": "net_d", "network_g": "net_g",
            "network_le_dm": "net_le_dm", "network_d": "net_d"}

# The shipped HI-Diff configurations (docs/architecture.md 1.1); RealBlur_J and _R share them.
_G_COMMON = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[3, 5, 6, 6], num_refinement_blocks=4,
                 heads=[1, 2, 4, 8], bias=False, LayerNorm_type="WithBias", dual_pixel_task=False,
                 embed_dim=64, group=4)
OFFICIAL_VARIANTS: Dict[str, Dict[str, Any]] = {
    "HI-Diff GoPro": {
        "net_g": {"type": "Transformer", **_G_COMMON, "ffn_expansion_factor": 2.66},
        "net_le_dm": {"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 64, "block_num": 6,
                      "stage": 2, "group": 4, "patch_expansion": 0.5, "channel_expansion": 4},
        "net_d": {"type": "denoising", "in_channel": 256, "out_channel": 256, "inner_channel": 512,
                  "block_num": 4, "group": 4, "patch_expansion": 0.5, "channel_expansion": 2},
        "diffusion": {"preset": "hidiff_local", "timesteps": 8},
    },
    "HI-Diff RealBlur": {
        "net_g": {"type": "Transformer", **_G_COMMON, "ffn_expansion_factor": 2},
        "net_le_dm": {"type": "latent_encoder_lrelu", "in_chans": 3, "embed_dim": 64, "block_num": 5,
                      "stage": 2, "group": 4, "patch_expansion": 0.5, "channel_expansion": 4},
        "net_d": {"type": "simple_denoise", "n_feats": 64, "n_denoise_res": 4},
        "diffusion": {"preset": "ldm", "timesteps": 16},
    },
}
_DEFAULT_STEPS = {"denoising": ("hidiff_local", 8), "simple_denoise": ("ldm", 16)}


@dataclass
class Recognised:
    """What a set of state_dicts is: a variant name, network blocks and diffusion settings."""

    variant: str                                  # 'HI-Diff GoPro', 'HI-Diff RealBlur' or 'custom'
    networks: Dict[str, Dict[str, Any]]           # 'net_g' etc. -> {'type': ..., **kwargs}
    diffusion: Optional[Dict[str, Any]] = None    # {'preset': ..., 'timesteps': ...}; None if prior-free

    def describe(self) -> str:
        g = self.networks["net_g"]
        parts = [f"{self.variant}: net_g {g['type']} (dim {g.get('dim')}, blocks {g.get('num_blocks')}, "
                 f"ffn {g.get('ffn_expansion_factor')})"]
        for name in ("net_le_dm", "net_d"):
            if name in self.networks:
                parts.append(f"{name} {self.networks[name]['type']}")
        if self.diffusion:
            parts.append(f"diffusion {self.diffusion['preset']} T={self.diffusion['timesteps']}")
        return ", ".join(parts)


# ------------------------------------------------------------- recognition
def recognise(state_dicts: Mapping[str, StateDict], *, timesteps: Optional[int] = None) -> Recognised:
    """Infer network types, kwargs and diffusion settings from state_dict keys and shapes.

    ``state_dicts`` maps 'net_g' (required), 'net_le_dm' and 'net_d' (required
    when net_g takes a prior) to state_dicts.  Raises CheckpointError when a
    state_dict is not one of the HI-Diff networks or pieces are missing.
    """
    sds = {_ALIASES.get(k, k): v for k, v in state_dicts.items()}
    if "net_g" not in sds:
        raise CheckpointError(f"no net_g weights among {sorted(state_dicts)}")
    nets = {"net_g": _recognise_unet(sds["net_g"])}
    diffusion = None
    if nets["net_g"].get("use_prior", True):
        missing = [n for n in ("net_le_dm", "net_d") if n not in sds]
        if missing:
            raise CheckpointError(f"net_g takes a diffusion prior but no weights were given for "
                                  f"{' and '.join(missing)}; all three of {', '.join(NET_FILES)} are needed")
        nets["net_le_dm"] = _recognise_encoder(sds["net_le_dm"])
        nets["net_d"] = _recognise_denoiser(sds["net_d"])
        preset, steps = _DEFAULT_STEPS[nets["net_d"]["type"]]
        if timesteps is not None and (isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1):
            raise ConfigError(f"timesteps: expected a positive integer number of diffusion steps, got {timesteps!r}")
        diffusion = {"preset": preset, "timesteps": steps if timesteps is None else timesteps}
        _check_prior_widths(nets)
    variant = "custom"
    for name, spec in OFFICIAL_VARIANTS.items():
        if all(nets.get(k) == spec[k] for k in ("net_g", "net_le_dm", "net_d")) and diffusion == spec["diffusion"]:
            variant = name
    return Recognised(variant, nets, diffusion)


def _shape(sd: StateDict, key: str, what: str) -> tuple:
    if key not in sd:
        raise CheckpointError(f"{what}: expected key '{key}' is missing (not a HI-Diff {what} state_dict?); "
                              f"first keys: {list(sd)[:5]}")
    return tuple(sd[key].shape)


def _count(sd: StateDict, prefix: str) -> int:
    """Number of consecutive indices i with keys '<prefix>.<i>.*'."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def _recognise_unet(sd: StateDict) -> Dict[str, Any]:
    what = "net_g"
    dim, inp = _shape(sd, "patch_embed.proj.weight", what)[:2]
    out = _shape(sd, "output.weight", what)[0]
    heads = [_shape(sd, f"{lvl}.blocks.0.attn.temperature", what)[0] for lvl in STAGES[:4]]
    blocks = [_count(sd, f"{lvl}.blocks") for lvl in STAGES[:4]]
    widths = {lvl: _shape(sd, f"{lvl}.blocks.0.norm1.body.weight", what)[0] for lvl in STAGES
              if f"{lvl}.blocks.0.norm1.body.weight" in sd}
    hidden = {lvl: _shape(sd, f"{lvl}.blocks.0.ffn.project_out.weight", what)[1] for lvl in widths}
    kw: Dict[str, Any] = {
        "type": "Transformer", "inp_channels": inp, "out_channels": out, "dim": dim, "num_blocks": blocks,
        "num_refinement_blocks": _count(sd, "refinement.blocks"), "heads": heads,
        "ffn_expansion_factor": _ffn_factor(widths, hidden),
        "bias": "encoder_level1.blocks.0.attn.qkv.bias" in sd,
        "LayerNorm_type": "WithBias" if "encoder_level1.blocks.0.norm1.body.bias" in sd else "BiasFree",
        "dual_pixel_task": "skip_conv.weight" in sd,
    }
    him_levels = [lvl for lvl in STAGES if f"{lvl}.him.q.weight" in sd]
    film = "latent.blocks.0.attn.ln1.weight" in sd
    pyramid = "down_1.1.weight" in sd
    if not (him_levels or film):
        kw.update(embed_dim=64, group=4, use_prior=False)
        return kw
    prior_dim = (_shape(sd, f"{him_levels[0]}.him.kv.weight", what)[1] if him_levels
                 else _shape(sd, "latent.blocks.0.attn.ln1.weight", what)[1])
    kw["embed_dim"] = prior_dim // 4
    kw["group"] = math.isqrt(_shape(sd, "down_1.1.weight", what)[1]) if pyramid else 4
    # ablation switches, only when they differ from the official network
    if him_levels != [lvl for lvl in STAGES if lvl != "latent"]:
        kw["him_levels"] = him_levels
    if not film:
        kw["film_bottleneck"] = False
    if not pyramid:
        kw["prior_pyramid"] = False
    return kw


def _ffn_factor(widths: Mapping[str, int], hidden: Mapping[str, int]) -> float:
    """The factor f with int(width * f) == hidden at every stage (2.66 and 2 tried first)."""
    candidates = [2.66, 2]
    for lvl in widths:
        ratio = hidden[lvl] / widths[lvl]
        candidates += [round(ratio, 2), round(ratio, 3), ratio]
    for f in candidates:
        if all(int(widths[lvl] * f) == hidden[lvl] for lvl in widths):
            return f
    raise CheckpointError(f"net_g: FFN widths {dict(hidden)} do not follow one expansion factor of the stage "
                          f"widths {dict(widths)}")


def _recognise_encoder(sd: StateDict) -> Dict[str, Any]:
    what = "net_le_dm"
    e, cin = _shape(sd, "conv1.0.weight", what)[:2]
    lrelu = "conv2.0.weight" in sd
    width = 4 * e if lrelu else e
    tok_hidden, tokens = _shape(sd, "mlp.patch_mixer.0.weight", what)
    ch_hidden = _shape(sd, "mlp.channel_mixer.0.weight", what)[0]
    in_chans = cin // 16
    if in_chans != 3:
        raise CheckpointError(f"{what}: the encoder takes {in_chans} channels; inference needs the stage-2 "
                              f"encoder on the blurry image (3 channels) - is this net_le (stage 1, 6 channels)?")
    return {"type": "latent_encoder_lrelu" if lrelu else "latent_encoder_gelu", "in_chans": in_chans,
            "embed_dim": e, "block_num": _count(sd, "blocks"), "stage": 2, "group": math.isqrt(tokens),
            "patch_expansion": tok_hidden / tokens, "channel_expansion": _nice(ch_hidden / width)}


def _recognise_denoiser(sd: StateDict) -> Dict[str, Any]:
    what = "net_d"
    if "time_mlp" in sd:
        inner, cin3 = _shape(sd, "first_layer.0.weight", what)
        out = _shape(sd, "final_layer.0.weight", what)[0]
        n_blocks = _count(sd, "blocks")
        kw: Dict[str, Any] = {"type": "denoising", "in_channel": cin3 // 3, "out_channel": out,
                              "inner_channel": inner, "block_num": n_blocks + 2}
        if n_blocks:
            tok_hidden, tokens = _shape(sd, "blocks.0.0.patch_mixer.0.weight", what)
            ch_hidden = _shape(sd, "blocks.0.0.channel_mixer.0.weight", what)[0]
            kw.update(group=math.isqrt(tokens), patch_expansion=tok_hidden / tokens,
                      channel_expansion=_nice(ch_hidden / inner))
        else:
            kw.update(group=4, patch_expansion=0.5, channel_expansion=2)
        return kw
    if "resmlp.0.weight" in sd:
        width = _shape(sd, "resmlp.0.weight", what)[0]
        n_res = sum(1 for k in sd if re.fullmatch(r"resmlp\.\d+\.resmlp\.0\.weight", k))
        return {"type": "simple_denoise", "n_feats": width // 4, "n_denoise_res": n_res}
    raise CheckpointError(f"{what}: neither a 'denoising' (time_mlp) nor a 'simple_denoise' (resmlp) "
                          f"state_dict; first keys: {list(sd)[:5]}")


def _nice(x: float) -> Union[int, float]:
    return int(x) if float(x).is_integer() else x


def _check_prior_widths(nets: Mapping[str, Dict[str, Any]]) -> None:
    g, le, d = nets["net_g"], nets["net_le_dm"], nets["net_d"]
    widths = {"net_g": 4 * g["embed_dim"], "net_le_dm": 4 * le["embed_dim"],
              "net_d": d["in_channel"] if d["type"] == "denoising" else 4 * d["n_feats"]}
    if len(set(widths.values())) != 1:
        raise CheckpointError(f"the three networks disagree on the prior width: {widths} (files from different "
                              f"models?)")
    tokens = {"net_g": g["group"] ** 2, "net_le_dm": le["group"] ** 2}
    if d["type"] == "denoising":
        tokens["net_d"] = d["group"] ** 2
    if len(set(tokens.values())) != 1:
        raise CheckpointError(f"the networks disagree on the number of prior tokens: {tokens}")


# ---------------------------------------------------------------- building
def build_pipeline(state_dicts: Mapping[str, StateDict], *, device: Union[str, torch.device] = "cpu",
                   timesteps: Optional[int] = None, sources: Optional[Mapping[str, str]] = None):
    """Recognise, build, strictly load and return ``(RestorationPipeline, Recognised)``."""
    # saved from inside DDP or torch.compile: recognise the keys the networks will load
    sds = {_ALIASES.get(k, k): strip_prefixes(v) for k, v in state_dicts.items()}
    for name, sd in sds.items():
        check_finite(sd, (sources or {}).get(name, name))
    rec = recognise(sds, timesteps=timesteps)
    nets = {}
    for name, block in rec.networks.items():
        try:
            net = build_network(block, where=name)
        except ConfigError as exc:
            raise CheckpointError(f"{name}: the recognised options do not build a network ({exc})") from None
        load_state_into(net, sds[name], strict=True, source=(sources or {}).get(name, name))
        nets[name] = net.eval()
    kwargs = {"pad_multiple": 8, "in_channels": rec.networks["net_g"]["inp_channels"]}
    if rec.diffusion is not None:
        kwargs.update(net_le_dm=nets["net_le_dm"], net_d=nets["net_d"],
                      diffusion=build_diffusion(rec.diffusion["preset"], timesteps=rec.diffusion["timesteps"]))
    pipeline = RestorationPipeline(nets["net_g"], **kwargs).to(device).eval()
    return pipeline, rec


def load_official(folder: PathLike, device: Union[str, torch.device] = "cpu", *,
                  timesteps: Optional[int] = None, param_key: str = "params"):
    """The authors' release folder (net_g.pth, net_le_dm.pth, net_d.pth) -> (pipeline, Recognised)."""
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"weights folder not found: {root}")
    files = {name: root / f"{name}.pth" for name in NET_FILES if (root / f"{name}.pth").is_file()}
    if "net_g" not in files:
        present = sorted(p.name for p in root.glob("*.pth"))
        raise CheckpointError(f"{root}: expected the released files {', '.join(n + '.pth' for n in NET_FILES)}; "
                              f"found {present or 'no .pth files'}")
    sds = {name: select_params(safe_load(path), param_key, path) for name, path in files.items()}
    return build_pipeline(sds, device=device, timesteps=timesteps,
                          sources={k: str(v) for k, v in files.items()})


def load_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu", *,
                    timesteps: Optional[int] = None, param_key: str = "params_ema"):
    """One file holding several networks -> (pipeline, Recognised).

    Accepted layouts: ``{'net_g': ..., 'net_le_dm': ..., 'net_d': ...}`` (also
    with 'g'/'le_dm'/'d' keys or nested under 'networks'/'nets'), each value a
    ``{'params'[, 'params_ema']}`` dict or a bare state_dict; a hidiff training
    or a single prior-free ``net_g`` file.  A training state is refused: its
    run's recorded settings (not the shapes) decide how it restores.
    """
    p = Path(path)
    obj = safe_load(p)
    if isinstance(obj, Mapping) and obj.get("format") == "hidiff-train-state":
        raise CheckpointError(f"{p} is a training state: restore it with the settings its run recorded "
                              f"(hidiff.runners.weights.from_checkpoint, or hidiff-deblur --checkpoint)")
    nets = _split_networks(obj, p)
    sds = {name: select_params(value, param_key, f"{p}[{name}]") for name, value in nets.items()}
    return build_pipeline(sds, device=device, timesteps=timesteps, sources={k: f"{p}[{k}]" for k in sds})


def _split_networks(obj: Any, path: Path) -> Dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of networks, got {type(obj).__name__}")
    named = {_ALIASES.get(str(k), str(k)): v for k, v in obj.items()
             if _ALIASES.get(str(k), str(k)) in NET_FILES and isinstance(v, Mapping)}
    if named:
        return named
    for key in ("networks", "nets", "state_dicts"):
        if isinstance(obj.get(key), Mapping):
            return _split_networks(obj[key], path)
    if "params" in obj or "params_ema" in obj or (obj and all(isinstance(v, Tensor) for v in obj.values())):
        return {"net_g": obj}  # a single network file
    raise CheckpointError(f"{path}: no networks found; expected keys {', '.join(NET_FILES)} (or a 'networks' "
                          f"entry); top-level keys: {sorted(map(str, obj))[:10]}")
