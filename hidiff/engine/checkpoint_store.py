"""The checkpoint sets of one experiment: write order, verification, retention.

Layout (BasicSR-compatible names)::

    <root>/models/net_<x>_<iter>.pth        {'params': sd[, 'params_ema': sd]}
    <root>/training_states/<iter>.state     everything else + a manifest of the net files
    <root>/models/net_<x>_best.pth, best.json     best validation score so far (+ manifest)
    <root>/models/net_<x>_latest.pth, latest.json  written at the end of training (+ manifest)

A checkpoint is one unit: each file is written atomically, the network files
first and the file that lists them (size and sha256) last: the state file of an
iteration, ``<tag>.json`` of a tagged set (its new networks are written in full
under temporary names first; the old marker is removed only then, just before
they are renamed into place).  A unit is *complete* only when that list exists and every file it
names is present and intact, so a process killed mid-save (even by SIGKILL)
leaves at worst an incomplete newest unit that every reader skips: resume
(:meth:`CheckpointStore.latest_valid`) and everything that picks weights from a
run folder (:func:`latest_complete`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from hidiff.errors import CheckpointError
from hidiff.utils.atomic import fsync_dir, atomic_write_text
from hidiff.utils.checkpoint import safe_load, save_network_file, save_object
from hidiff.utils.hashing import sha256_file

STATE_FORMAT = "hidiff-train-state"
STATE_VERSION = 1
# Test hooks: when saving this iteration, hang after the network files and before
# the state file, or after the first network file (lets a test SIGKILL the
# process in the middle of a save).
HANG_ENV = "HIDIFF_TEST_HANG_AFTER_NETWORKS"
HANG_FIRST_ENV = "HIDIFF_TEST_HANG_AFTER_FIRST_NETWORK"

_STATE_RE = re.compile(r"^(\d+)\.state$")


@dataclass
class VerifiedState:
    """A complete checkpoint set: the state dict and the loaded network files."""

    path: Path
    state: dict[str, Any]
    networks: dict[str, dict[str, Any]]  # name -> {'params': sd[, 'params_ema': sd]}

    @property
    def iteration(self) -> int:
        return int(self.state["iter"])


class CheckpointStore:
    """Reads and writes the checkpoint sets under one experiment folder."""

    def __init__(self, root: str | os.PathLike, logger: logging.Logger | None = None) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.states = self.root / "training_states"
        self.log = logger or logging.getLogger("hidiff")

    # ------------------------------------------------------------------ names
    def net_path(self, name: str, tag: int | str) -> Path:
        return self.models / f"net_{name}_{tag}.pth"

    def state_path(self, iteration: int) -> Path:
        return self.states / f"{iteration}.state"

    # ------------------------------------------------------------------ write
    def save(self, iteration: int, nets: Mapping[str, tuple[Mapping[str, Tensor], Mapping[str, Tensor] | None]],
             state: dict[str, Any]) -> Path:
        """Write one complete set: the network files, then the state file (last)."""
        manifest = {}
        for name, (params, ema) in nets.items():
            path = self.net_path(name, iteration)
            save_network_file(path, params, ema)
            manifest[name] = {"file": str(path.relative_to(self.root)), "size": path.stat().st_size,
                              "sha256": sha256_file(path)}
            self._test_hang(iteration, HANG_FIRST_ENV)
        self._test_hang(iteration, HANG_ENV)
        payload = dict(state, format=STATE_FORMAT, version=STATE_VERSION, iter=int(iteration), networks=manifest)
        out = self.state_path(iteration)
        save_object(out, payload)
        return out

    def _test_hang(self, iteration: int, env: str) -> None:
        if os.environ.get(env) == str(iteration):
            atomic_write_text(self.root / f"hang_{iteration}.marker", f"save of {iteration} paused ({env})\n")
            time.sleep(3600)

    def save_tagged(self, tag: str, nets: Mapping[str, tuple[Mapping[str, Tensor], Mapping[str, Tensor] | None]],
                    info: dict[str, Any]) -> None:
        """Write ``net_<x>_<tag>.pth`` for every net (e.g. 'latest', 'best'), then ``<tag>.json`` naming them.

        ``info`` must hold the iteration (``iter``).  Every network is first written in full (fsynced)
        as ``.net_<x>_<tag>.pth.<random>.tmp``; only then is the marker removed, the files renamed into
        place and the new marker written.  A failure before the renames (ENOSPC, an error, SIGKILL)
        leaves the previous unit as it was: marker and files unchanged, the temporary files removed
        (after a kill, by :meth:`remove_stale_temp_files`).  While the renames run there is no marker,
        so no reader takes a mix of old and new files.  The price: for a moment the disk holds the old and
        the new files of every network, where rewriting in place held one extra file at a time.
        """
        marker = self.models / f"{tag}.json"
        token = os.urandom(4).hex()
        pending: list[tuple[Path, Path]] = []  # (temporary file, final name)
        manifest = {}
        try:
            for name, (params, ema) in nets.items():
                path = self.net_path(name, tag)
                tmp = path.with_name(f".{path.name}.{token}.tmp")
                pending.append((tmp, path))
                save_network_file(tmp, params, ema)
                manifest[name] = {"file": str(path.relative_to(self.root)), "size": tmp.stat().st_size,
                                  "sha256": sha256_file(tmp)}
            marker.unlink(missing_ok=True)
            for tmp, path in pending:
                os.replace(tmp, path)
        except OSError as exc:
            self._discard(pending)
            raise CheckpointError(f"saving the '{tag}' networks in {self.models} failed: {exc}") from exc
        except BaseException:
            self._discard(pending)
            raise
        fsync_dir(self.models)  # the renames are on disk before the marker that lists them
        atomic_write_text(marker, json.dumps(dict(info, networks=manifest), indent=2, sort_keys=True) + "\n")

    @staticmethod
    def _discard(pending: list[tuple[Path, Path]]) -> None:
        """Remove the temporary files of a failed :meth:`save_tagged` that were not renamed yet."""
        for tmp, _ in pending:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # remove_stale_temp_files takes it on the next start

    # ------------------------------------------------------------------- read
    def iterations(self) -> list[int]:
        """Iterations that have a state file, ascending (complete or not)."""
        if not self.states.is_dir():
            return []
        its = [int(m.group(1)) for p in self.states.iterdir() if (m := _STATE_RE.match(p.name))]
        return sorted(its)

    def verify(self, state_path: str | os.PathLike) -> VerifiedState:
        """Load a state and every network file it lists; CheckpointError if anything is off."""
        state_path = Path(state_path)
        state = safe_load(state_path)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{state_path} is not a hidiff training state (no format marker "
                                  f"'{STATE_FORMAT}'); BasicSR .state files cannot be resumed exactly")
        version = _int_entry(state_path, state, "version", -1)
        if version > STATE_VERSION:
            raise CheckpointError(f"{state_path}: state version {version} is newer than this "
                                  f"hidiff supports ({STATE_VERSION})")
        _int_entry(state_path, state, "iter")
        networks = state.get("networks", {})
        if not isinstance(networks, dict):
            raise CheckpointError(f"{state_path}: 'networks' should map each network to its file, size and "
                                  f"sha256, got {type(networks).__name__}")
        root = state_path.parent.parent
        nets = {}
        for name, entry in networks.items():
            rel, size, sha = _manifest_entry(state_path, name, entry)
            f = root / rel
            if not f.is_file():
                raise CheckpointError(f"{state_path}: network file {f} is missing")
            if f.stat().st_size != size or sha256_file(f) != sha:
                raise CheckpointError(f"{state_path}: network file {f} differs from the one this state was "
                                      "saved with (size/sha256 mismatch)")
            nets[name] = safe_load(f)
        return VerifiedState(state_path, state, nets)

    def latest_valid(self) -> VerifiedState | None:
        """The newest complete set; incomplete/corrupt/malformed newer sets are logged and skipped."""
        for it in reversed(self.iterations()):
            try:
                return self.verify(self.state_path(it))
            except CheckpointError as exc:
                self.log.warning("skipping incomplete or invalid checkpoint at iteration %d: %s", it, exc)
        return None

    # -------------------------------------------------------------- retention
    def prune(self, keep_last: int | None, protect: set[int] = frozenset()) -> list[int]:
        """Delete all but the newest ``keep_last`` sets (never those in ``protect``)."""
        if not keep_last or keep_last <= 0:
            return []
        its = self.iterations()
        doomed = [it for it in its[:-keep_last] if it not in protect]
        for it in doomed:
            self.delete(it)
        return doomed

    def delete(self, iteration: int) -> None:
        """Remove one set: the state first, so no state ever points at deleted files."""
        self.state_path(iteration).unlink(missing_ok=True)
        if self.models.is_dir():
            for p in self.models.glob(f"net_*_{iteration}.pth"):
                p.unlink(missing_ok=True)

    def set_aside_after(self, iteration: int, dest: Path) -> list[str]:
        """Move every set and tag saved after ``iteration`` into ``dest`` (same layout); what moved, named.

        A resume from an earlier point starts a new branch: the later sets would otherwise be taken by
        ``--resume auto``, stage-2 links and test.py, and keep_last would delete the resumed set first.
        """
        moved = []

        def move(p: Path) -> None:
            target = dest / p.relative_to(self.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            p.rename(target)

        for it in (it for it in self.iterations() if it > iteration):
            move(self.state_path(it))  # the state first: no state ever points at moved files
            for p in sorted(self.models.glob(f"net_*_{it}.pth")) if self.models.is_dir() else []:
                move(p)
            moved.append(str(it))
        for marker in sorted(self.models.glob("*.json")) if self.models.is_dir() else []:
            try:
                info = json.loads(marker.read_text(encoding="utf-8"))
                later = isinstance(info, dict) and "networks" in info and int(info.get("iter", -1)) > iteration
            except (OSError, ValueError, TypeError):
                continue
            if later:
                move(marker)  # the marker first, as save_tagged removes it first
                for p in sorted(self.models.glob(f"net_*_{marker.stem}.pth")):
                    move(p)
                moved.append(marker.stem)
        return moved

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files left by a process killed while writing (``.<name>.*.tmp``)."""
        removed = []
        for folder in (self.models, self.states, self.root):
            if folder.is_dir():
                for p in folder.glob(".*.tmp"):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed


def _int_entry(source: Path, state: dict[str, Any], key: str, default: int | None = None) -> int:
    """``state[key]`` as an int; CheckpointError naming ``source`` and the key if it is missing or not a number."""
    if key not in state and default is not None:
        return default
    if key not in state:
        raise CheckpointError(f"{source}: the training state has no '{key}' entry")
    try:
        return int(state[key])
    except (TypeError, ValueError, OverflowError):
        raise CheckpointError(f"{source}: '{key}' should be an integer, got {state[key]!r:.80}") from None


def _manifest_entry(source: Path, name: Any, entry: Any) -> tuple[str, int, str]:
    """(file, size, sha256) of one network in a state's manifest; CheckpointError naming what is missing."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{source}: the manifest entry of network '{name}' should be a dict with 'file', "
                              f"'size' and 'sha256', got {type(entry).__name__}")
    missing = [k for k in ("file", "size", "sha256") if k not in entry]
    if missing:
        raise CheckpointError(f"{source}: the manifest entry of network '{name}' has no "
                              f"{', '.join(map(repr, missing))} (expected 'file', 'size' and 'sha256')")
    f, size, sha = entry["file"], entry["size"], entry["sha256"]
    if not isinstance(f, str) or not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha, str):
        raise CheckpointError(f"{source}: the manifest entry of network '{name}' should hold a file name, a size "
                              f"in bytes and a sha256 string, got {entry!r:.200}")
    return f, size, sha


@dataclass(frozen=True)
class CheckpointUnit:
    """Network files (and, for an iteration set, the training state) that were written as one unit."""

    iteration: int
    networks: dict[str, Path]  # suffix -> file, e.g. {'g': .../net_g_4.pth, 'le': .../net_le_4.pth}
    state: Optional[Path]      # training_states/<iter>.state; None for a tagged set ('latest', 'best')


def latest_complete(exp_dir: str | os.PathLike, which: int | str = "latest") -> CheckpointUnit | None:
    """The complete checkpoint unit of a run folder that ``which`` names, or None.

    ``which``: 'latest' (the highest complete iteration among the numbered sets and
    the 'latest' tag), 'best', or an iteration number.  Incomplete units (a save
    killed between two files, a truncated or replaced file) are never returned.
    """
    root = Path(exp_dir)
    if str(which) == "best":
        return _tagged_unit(root, "best")
    if str(which) != "latest":
        if not str(which).isdigit():
            raise CheckpointError(f"checkpoint of {root}: expected 'latest', 'best' or an iteration number, "
                                  f"got {which!r}")
        return _iteration_unit(root, int(which))
    tagged = _tagged_unit(root, "latest")
    for it in reversed(CheckpointStore(root).iterations()):
        if tagged is not None and tagged.iteration > it:
            break
        unit = _iteration_unit(root, it)
        if unit is not None:
            return unit
    return tagged


def _manifest_files(root: Path, manifest: Any) -> dict[str, Path] | None:
    """The files of a manifest if every one is present and intact, else None."""
    if not isinstance(manifest, dict) or not manifest:
        return None
    out = {}
    for name, entry in manifest.items():
        f = root / entry["file"]
        if not f.is_file() or f.stat().st_size != entry["size"] or sha256_file(f) != entry["sha256"]:
            return None
        out[name] = f
    return out


def _iteration_unit(root: Path, iteration: int) -> CheckpointUnit | None:
    path = CheckpointStore(root).state_path(iteration)
    if not path.is_file():
        return None
    try:  # mmap: only the manifest is read, not the optimizer tensors
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        files = _manifest_files(root, state.get("networks")) if state.get("format") == STATE_FORMAT else None
    except Exception:  # a truncated or foreign file is not a complete unit
        return None
    return None if files is None else CheckpointUnit(iteration, files, path)


def _tagged_unit(root: Path, tag: str) -> CheckpointUnit | None:
    marker = root / "models" / f"{tag}.json"
    try:
        info = json.loads(marker.read_text())
        files = _manifest_files(root, info.get("networks"))
        iteration = int(info["iter"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None if files is None else CheckpointUnit(iteration, files, None)
