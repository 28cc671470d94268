"""The training state of a checkpoint: which one to resume, the config-change check, save and restore.

Resolving and checking only read files, so a resume that is refused (changed
options, a corrupt state) leaves the run folder exactly as it was.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

import hidiff
from hidiff.config import config_diff, config_hash
from hidiff.engine import distributed as D
from hidiff.engine.checkpoint_store import CheckpointStore, VerifiedState
from hidiff.engine.seeding import capture_rng_state, seed_everything
from hidiff.errors import CheckpointError, ConfigError
from hidiff.utils.checkpoint import cpu_state_dict
from hidiff.utils.hashing import sha256_file


def choose_resume(arg: str, store: CheckpointStore, log: logging.Logger, is_main: bool) -> Optional[Path]:
    """The state file to resume, decided by rank 0 and the same on every rank (None: a fresh start).

    ``arg``: 'auto' (the newest complete set of ``store``, else fresh), 'none' or a state file.
    """
    choice: Optional[str] = None
    error: Optional[str] = None
    if is_main:
        try:
            if arg == "auto":
                v = store.latest_valid()
                choice = str(v.path) if v is not None else None
                if v is None:
                    log.info("--resume auto: no complete checkpoint in %s; starting from scratch", store.states)
            elif arg not in ("none", "None", ""):
                choice = arg
        except Exception as exc:  # shared with the other ranks below, then raised everywhere
            error = f"{type(exc).__name__}: {exc}"
    error, choice = D.broadcast_object((error, choice))
    if error is not None:
        raise CheckpointError(f"resolving --resume {arg}: {error}")
    return None if choice is None else Path(choice)


def verify_resume(path: Path, log: logging.Logger) -> VerifiedState:
    """Load and check the chosen state and every network file it lists."""
    if not path.is_file():
        raise CheckpointError(f"--resume: state file not found: {path}")
    return CheckpointStore(path.parent.parent, log).verify(path)


def check_config_change(verified: VerifiedState, options, allow: bool, log: logging.Logger) -> None:
    """Refuse a resume whose resolved options differ from the checkpoint's, unless ``allow`` (then log it)."""
    st = verified.state
    if st.get("config_hash") == config_hash(options):
        return
    diff = "\n".join(config_diff(st.get("config", {}), options.to_dict())) or "(no difference in the saved dump)"
    if not allow:
        raise ConfigError(f"--resume {verified.path}: the options differ from those the checkpoint was trained "
                          f"with:\n{diff}\nrun with --allow-config-change to resume anyway")
    log.warning("resuming with changed options (--allow-config-change):\n%s", diff)


def pretrained_record(specs: dict) -> dict[str, dict[str, str]]:
    """``{net: {path, sha256}}`` of the files networks are initialised from (``resolve_pretrained``'s specs):
    what a training state records, so a resume can tell whether one of them changed."""
    return {net: {"path": str(spec.path), "sha256": sha256_file(spec.path)} for net, spec in specs.items()}


def changed_pretrained(verified: VerifiedState,
                       pretrained: dict[str, dict[str, str]]) -> list[tuple[str, dict, dict[str, str]]]:
    """``(net, recorded, now)`` for each network outside the checkpoint (stage 2's frozen net_le) whose file
    changed since the run started; none for states saved before the files' sha256 were recorded."""
    saved = verified.state.get("pretrained")
    if not isinstance(saved, dict):
        return []
    return [(net, saved[net], now) for net, now in sorted(pretrained.items())
            if net not in verified.networks and isinstance(saved.get(net), dict)
            and saved[net].get("sha256") != now["sha256"]]


def check_pretrained_kept(verified: VerifiedState, pretrained: dict[str, dict[str, str]], allow: bool,
                          log: logging.Logger) -> None:
    """Refuse a resume whose networks outside the checkpoint (stage 2's frozen net_le) would load from a file
    that changed since the run started, unless ``allow`` (then log it).

    Those networks are loaded again from their files on every resume; a stage-1 run retrained under the
    same name would otherwise change the target prior mid-run, silently.
    """
    for net, was, now in changed_pretrained(verified, pretrained):
        msg = (f"--resume {verified.path}: net_{net} is not in the checkpoint and is loaded again from "
               f"{now['path']} (sha256 {now['sha256'][:12]}), but the run started from {was.get('path')} "
               f"(sha256 {str(was.get('sha256'))[:12]})")
        if not allow:
            raise ConfigError(f"{msg}; the stage-1 run was retrained or the file replaced. Resume with the "
                              f"original file, or run with --allow-config-change to go on with the new one")
        log.warning("%s; going on with the new file (--allow-config-change)", msg)


def build_state(t, ranks: list[Any]) -> dict[str, Any]:
    """Everything but the networks that an exact resume needs (the state file's payload)."""
    return {
        "epoch": t.batches.epoch, "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(), "scaler": t.amp.state_dict(),
        "sampler": t.sampler.state_dict(consumed=t.batches.samples_this_pass),
        "ranks": ranks, "best": t.best, "nonfinite": t.guard.state_dict(),
        "config_hash": config_hash(t.opt), "config": t.opt.to_dict(), "pretrained": t.pretrained,
        "world_size": t.dist.world_size, "hidiff_version": hidiff.__version__,
        "torch_version": str(torch.__version__),
    }


def network_payloads(t) -> dict[str, tuple[dict[str, Tensor], Optional[dict[str, Tensor]]]]:
    """``{suffix: (weights, EMA weights or None)}`` of the networks a checkpoint holds, as CPU copies."""
    nets = t.model.networks()
    return {n: (cpu_state_dict(nets[n]), t.ema[n].state_dict() if n in t.ema else None) for n in t.model.save_names}


def save_checkpoint(t, it: int) -> None:
    """Write the complete checkpoint unit of iteration ``it`` (rank 0); every rank learns whether it worked."""
    mine = {"rng": capture_rng_state(),
            "progressive": t.progressive.state_dict() if t.progressive is not None else None}
    ranks = D.all_gather_objects(mine)
    error: Optional[str] = None
    failure: Optional[BaseException] = None
    if t.is_main:
        try:
            nets = network_payloads(t)
            path = t.store.save(it, nets, build_state(t, ranks))
            pruned = t.store.prune(t.opt.logger.keep_last)
            if it == t.topt.total_iter:
                t.store.save_tagged("latest", nets, {"iter": it})
            t.log.info("Saving models and training states at iteration %d (%s)%s", it, path,
                       f"; removed sets {pruned}" if pruned else "")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            failure = exc
    error = D.broadcast_object(error)
    if error is not None:
        msg = f"saving the checkpoint of iteration {it} in {t.exp_dir} failed: {error}"
        if t.is_main:
            raise CheckpointError(msg) from failure
        raise CheckpointError(msg)


def keep_option_hyperparameters(t, chosen: list[dict[str, Any]]) -> None:
    """Put the option file's optimiser settings back after loading the checkpoint's optimiser and scheduler.

    Loading them restores the hyperparameters they were saved with, so a changed ``lr`` or ``weight_decay``
    was logged and written to config.yml but never used.  Unchanged options make this a no-op.
    """
    changed = []
    for g, want in zip(t.optimizer.param_groups, chosen):
        for key, value in want.items():
            if key in ("lr", "initial_lr") or key not in g or g[key] == value:
                continue
            changed.append(f"{key} {g[key]} -> {value}")
            g[key] = value
    base_lrs = [float(w["initial_lr"]) for w in chosen]
    if base_lrs != t.scheduler.base_lrs:
        changed.append(f"base lr {t.scheduler.base_lrs} -> {base_lrs}")
        t.scheduler.base_lrs = base_lrs
        for g, base in zip(t.optimizer.param_groups, base_lrs):
            g["initial_lr"] = base
        if t.scheduler.last_iter > 0:
            t.scheduler.step_to(t.scheduler.last_iter)
    if changed:
        t.log.warning("resume: the option file's optimiser settings replace the checkpoint's: %s", "; ".join(changed))


#: what fixes the order of the training samples besides the world size (hidiff/data/sampler.py)
DATA_LAYOUT = ("dataset_len", "enlarge_ratio", "shuffle", "seed")


def continue_on_other_data(t, v: VerifiedState, sampler_state: dict[str, Any]) -> None:
    """A checkpoint of other training data (images added or removed, ``dataset_enlarge_ratio``, ``use_shuffle`` or
    ``manual_seed`` changed): refused, or with ``--allow-config-change`` the epoch goes on at the same fraction of
    its samples in the new order (``sampler_state`` is rewritten for the new layout)."""
    changed = {k: (sampler_state[k], getattr(t.sampler, k)) for k in DATA_LAYOUT
               if k in sampler_state and sampler_state[k] != getattr(t.sampler, k)}
    if not changed:
        return
    what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
    train = t.opt.datasets["train"]
    if not t.allow_config_change:
        raise ConfigError(f"{v.path}: the training data changed since this checkpoint ({what}; datasets.train "
                          f"'{train.name}'), so its sample order cannot continue exactly; run with "
                          f"--allow-config-change to continue on the data as it is now (the rest of the epoch in a "
                          f"new order, approximately), or --resume none to start over")
    old_len = int(sampler_state.get("dataset_len", t.sampler.dataset_len))
    old_ratio = int(sampler_state.get("enlarge_ratio", t.sampler.enlarge_ratio))
    old_samples = max(1, math.ceil(old_len * old_ratio / t.sampler.world_size))
    consumed = round(int(sampler_state["consumed"]) * t.sampler.num_samples / old_samples)
    sampler_state.update({k: getattr(t.sampler, k) for k in DATA_LAYOUT},
                         consumed=min(consumed, t.sampler.num_samples))
    t.log.warning("resume on other training data (%s; --allow-config-change): epoch %s continues at sample %d of "
                  "%d in the new order, approximately, not bitwise", what, sampler_state["epoch"],
                  sampler_state["consumed"], t.sampler.num_samples)


def restore_state(t, v: VerifiedState) -> None:
    """Load optimiser, scheduler, scaler, guard, best and sampler; pick this rank's random state."""
    st, o, log = v.state, t.opt, t.log
    # the option file's hyperparameters (an --allow-config-change resume may have changed lr or weight decay)
    chosen = [{k: val for k, val in g.items() if k != "params"} for g in t.optimizer.param_groups]
    t.optimizer.load_state_dict(st["optimizer"])
    t.scheduler.load_state_dict(st["scheduler"])
    keep_option_hyperparameters(t, chosen)
    t.amp.load_state_dict(st.get("scaler") or {})
    t.guard.load_state_dict(st.get("nonfinite", {}))
    t.start_iter = int(st["iter"])
    t.best = dict(st.get("best") or {})
    sampler_state = dict(st["sampler"])
    old_world = int(sampler_state.get("world_size", t.dist.world_size))
    exact = old_world == t.dist.world_size
    if not exact:
        consumed = int(sampler_state["consumed"]) * old_world // t.dist.world_size
        sampler_state.update(world_size=t.dist.world_size, consumed=min(consumed, t.sampler.num_samples))
        per_step = o.datasets["train"].batch_size_per_gpu * t.topt.grad_accum_steps
        log.warning("resume with %d processes instead of %d: the data order and random streams continue "
                    "approximately, not bitwise, and the global batch is %d instead of %d (the learning-rate "
                    "schedule still follows the iterations)", t.dist.world_size, old_world,
                    per_step * t.dist.world_size, per_step * old_world)
    continue_on_other_data(t, v, sampler_state)
    t.sampler.load_state_dict(sampler_state)
    ranks = st.get("ranks") or []
    t.rank_state = ranks[t.dist.rank] if exact and t.dist.rank < len(ranks) else None
    if t.rank_state is None:
        seed_everything(o.manual_seed + t.dist.rank + 7919 * t.start_iter)
    elif t.progressive is not None and t.rank_state.get("progressive") is not None:
        t.progressive.load_state_dict(t.rank_state["progressive"])
