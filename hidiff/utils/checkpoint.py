"""Network checkpoint files: safe loading, BasicSR-compatible layout, clear mismatches.

A network file is ``{'params': state_dict}`` and, with EMA, also
``{'params_ema': state_dict}`` (BasicSR layout, so official HI-Diff weights
load as they are).  Every file is read with ``torch.load(weights_only=True)``:
a file carrying pickled code is refused with a CheckpointError, never executed.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from hidiff.errors import CheckpointError
from hidiff.utils.atomic import atomic_open

PREFIXES = ("module.", "_orig_mod.")


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file.

    Raises CheckpointError when the file is missing, truncated/corrupt, or
    holds anything but tensors and plain containers (e.g. a pickled object
    whose ``__reduce__`` would run code).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = refused_global(exc)
        if refused is not None and not _ends_in_global(p, refused):
            raise CheckpointError(
                f"refusing to load {p}: it refers to the Python object '{refused}', which unpickling would import "
                f"and may call, so the file could run code; a weights file must hold only tensors and plain "
                f"containers. If it is yours, re-save only the tensors from the trusted environment whose model "
                f"wrote it (e.g. torch.save({{'params': net.state_dict()}}, 'clean.pth')); otherwise delete it"
                ) from None
        with open(p, "rb") as fh:
            head = fh.read(2)  # a zip archive (torch.save) or a protocol-2 pickle (legacy torch.save)
        if refused is not None:
            what = "a torch file that is truncated (it ends inside the name of a Python object)"
        elif head in (b"PK", b"\x80\x02"):
            what = "a torch file that is corrupt or holds contents the safe loader does not read"
        else:
            what = "not a torch file"
        raise CheckpointError(f"cannot read checkpoint {p}: {what} ({_unpickler_reason(exc)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, ImportError,
            # a legacy (non-zip) file cut or altered in its pickled header fails inside torch's reader
            IndexError, TypeError, AssertionError, OverflowError, struct.error) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: it is truncated, corrupt or not a torch file "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _ends_in_global(path: Path, refused: str) -> bool:
    """Whether the file ends inside the pickled name of ``refused`` (a file cut mid-name, not one naming code).

    A pickled global is ``c<module>\\n<name>\\n``; a legacy file truncated there makes the
    weights-only loader refuse the partial name (e.g. 'torch._utils._reb') as if it were foreign code.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 512))
            tail = fh.read()
    except OSError:
        return False
    m = re.search(rb"c([\w.]*(?:\n[\w.]*)?)\Z", tail)
    if m is None:
        return False
    # torch drops the last character of a line read without its newline (so compare a prefix) and shows
    # an empty name as 'GLOBAL .', which refused_global reads as 'GLOBAL'
    shown = refused.rstrip(".")
    return m.group(1).replace(b"\n", b".").decode("ascii").startswith("" if shown == "GLOBAL" else shown)


_GLOBAL = re.compile(r"(?:unsupported global|unsupported class)\W+(?:GLOBAL\s+)?([A-Za-z_][\w.]*)", re.IGNORECASE)


def refused_global(exc: BaseException) -> str | None:
    """The global (e.g. 'posix.system') a weights-only load refused, if that is why it failed."""
    m = _GLOBAL.search(str(exc))
    return m.group(1).rstrip(".") if m else None


def _unpickler_reason(exc: BaseException) -> str:
    """The informative line of torch's weights-only error, without torch's advice to load unsafely."""
    lines = [ln.strip() for ln in str(exc).split("WeightsUnpickler error:")[-1].splitlines() if ln.strip()]
    useful = [ln for ln in lines if "weights_only" not in ln.lower() and "weights only" not in ln.lower()]
    return (useful or ["unpickling failed"])[0].split(" Please use")[0]


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """Raise CheckpointError naming ``source`` and the tensors that hold NaN or Inf values."""
    bad = [k for k, v in state.items() if isinstance(v, Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or Inf values ({', '.join(bad[:5])}"
                              f"{' ...' if len(bad) > 5 else ''}); these weights cannot restore images (a diverged "
                              f"run? take an earlier checkpoint)")


def strip_prefixes(state: Mapping[str, Tensor], prefixes: tuple[str, ...] = PREFIXES) -> dict[str, Tensor]:
    """Remove DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes, repeatedly."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(net, "module") and isinstance(net.module, nn.Module):
            net = net.module
        elif hasattr(net, "_orig_mod") and isinstance(net._orig_mod, nn.Module):
            net = net._orig_mod
        else:
            return net


def cpu_state_dict(net: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of the unwrapped network's state_dict."""
    return {k: v.detach().cpu().clone() for k, v in strip_prefixes(unwrap(net).state_dict()).items()}


#: what :func:`params_entry` names a file that is a bare state_dict
BARE_STATE_DICT = "(bare state_dict)"


def select_params(ckpt: Any, param_key: str | None, path: str | os.PathLike) -> dict[str, Tensor]:
    """The state_dict under ``param_key`` (falls back to 'params'; a bare state_dict is accepted)."""
    return params_entry(ckpt, param_key, path)[1]


def params_entry(ckpt: Any, param_key: str | None, path: str | os.PathLike) -> tuple[str, dict[str, Tensor]]:
    """(the entry taken, its state_dict): ``param_key``, else 'params', else the bare state_dict.

    Reports name the entry taken: a file without 'params_ema' falls back to 'params'."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors or {{'params': state_dict}}, "
                              f"got {type(ckpt).__name__}")
    if param_key is None:
        param_key = "params"
    if param_key in ckpt and isinstance(ckpt[param_key], Mapping):
        return param_key, dict(ckpt[param_key])
    if "params" in ckpt and isinstance(ckpt["params"], Mapping):
        return "params", dict(ckpt["params"])
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return BARE_STATE_DICT, dict(ckpt)
    nested = [k for k, v in ckpt.items() if isinstance(v, Mapping)]
    wanted = f"'{param_key}'" if param_key == "params" else f"'{param_key}' or 'params'"
    raise CheckpointError(f"{path}: no {wanted} entry and not a bare state_dict; "
                          f"top-level keys: {sorted(map(str, ckpt))[:10]}" + (f" (nested: {nested[:10]})" if nested else ""))


def describe_mismatch(net: nn.Module, state: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape-mismatched 'key: file (a) vs net (b)') between a state and a net."""
    own = unwrap(net).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return missing, unexpected, shapes


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    if not items:
        return ""
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def load_state_into(net: nn.Module, state: Mapping[str, Tensor], *, strict: bool = True,
                    source: str = "<state>") -> tuple[list[str], list[str], list[str]]:
    """Load ``state`` (prefixes stripped) into ``net``; strict mismatches raise a CheckpointError.

    Non-strict loading skips shape-mismatched keys (instead of crashing) and
    returns what was missing/unexpected/mismatched so the caller can log it.
    """
    state = strip_prefixes(state)
    missing, unexpected, shapes = describe_mismatch(net, state)
    if strict and (missing or unexpected or shapes):
        raise CheckpointError(
            f"{source} does not fit {type(unwrap(net)).__name__} (strict load)"
            + _listing("missing keys", missing) + _listing("unexpected keys", unexpected)
            + _listing("shape mismatches", shapes)
            + "\n  (wrong network options for these weights? use strict_load: false only if you know why)")
    bad = {s.split(":")[0] for s in shapes}
    unwrap(net).load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    return missing, unexpected, shapes


def load_network(net: nn.Module, path: str | os.PathLike, *, param_key: str | None = "params",
                 strict: bool = True) -> tuple[list[str], list[str], list[str]]:
    """Load a network file (``{'params': sd}``, ``{'params_ema': sd}`` or a bare state_dict) into ``net``."""
    ckpt = safe_load(path)
    state = select_params(ckpt, param_key, path)
    return load_state_into(net, state, strict=strict, source=str(path))


def save_network_file(path: str | os.PathLike, params: Mapping[str, Tensor],
                      params_ema: Mapping[str, Tensor] | None = None) -> None:
    """Atomically write ``{'params': ..., ['params_ema': ...]}`` (CPU tensors, no prefixes)."""
    payload: dict[str, Any] = {"params": strip_prefixes({k: v.detach().cpu() for k, v in params.items()})}
    if params_ema is not None:
        payload["params_ema"] = strip_prefixes({k: v.detach().cpu() for k, v in params_ema.items()})
    save_object(path, payload)


def save_object(path: str | os.PathLike, obj: Any) -> None:
    """Atomically ``torch.save`` an object; failures raise CheckpointError.

    The bytes are read back with ``weights_only=True`` before they are written,
    so a checkpoint that :func:`safe_load` would refuse is never produced.
    """
    buf = io.BytesIO()
    try:
        torch.save(obj, buf)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: torch.save could not serialise it "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                              f"store tensors and plain types instead") from exc
    buf.seek(0)
    try:
        torch.load(buf, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = refused_global(exc) or _unpickler_reason(exc)
        raise CheckpointError(f"refusing to write {path}: it would hold an object that weights-only loading "
                              f"rejects ({what}); store plain types instead") from None
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getbuffer())
    except OSError as exc:
        raise CheckpointError(f"failed to write checkpoint {path}: {exc}") from exc
