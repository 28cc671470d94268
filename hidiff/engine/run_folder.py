"""The run folder ``experiments/<name>``: the only place a training start writes, and only once all checks passed.

Order (the experiments folder locked until the run folder is, hidiff/engine/run_lock.py): archive the
previous run (fresh start only), create the folder and lock it, remove
temporary files a killed writer left, write ``config.yml``, open the log file
(it receives the lines logged while the run was being checked and built) and
TensorBoard.  A failure is decided by rank 0 and raised on every rank.
"""
from __future__ import annotations

import logging
import logging.handlers
import time
from pathlib import Path
from typing import Optional

import torch

from hidiff.config import config_hash, key_differences, save_resolved
from hidiff.engine import distributed as D
from hidiff.engine.checkpoint_store import CheckpointStore, latest_complete
from hidiff.engine.logging import LOGGER_NAME, TensorBoard, setup_logger
from hidiff.engine.run_lock import RunLock
from hidiff.errors import CheckpointError
from hidiff.utils.archive import archive_previous


class EarlyLines:
    """Keeps the log records of the set-up phase so the log file, opened later, has them too."""

    def __init__(self) -> None:
        self.handler = logging.handlers.BufferingHandler(capacity=1 << 30)
        logging.getLogger(LOGGER_NAME).addHandler(self.handler)

    def replay_into_file(self) -> None:
        log = logging.getLogger(LOGGER_NAME)
        log.removeHandler(self.handler)
        files = [h for h in log.handlers if isinstance(h, logging.FileHandler)]
        for record in self.handler.buffer:
            for h in files:
                h.handle(record)
        self.handler.close()

    def discard(self) -> None:
        logging.getLogger(LOGGER_NAME).removeHandler(self.handler)
        self.handler.close()


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().parent == folder.resolve()
    except OSError:
        return False


def open_run_folder(options, exp_dir: Path, *, fresh: bool, is_main: bool, rank: int, stamp: str,
                    early: EarlyLines, lock: RunLock, resumed: Optional[Path] = None,
                    resumed_iter: Optional[int] = None) -> tuple[Optional[Path], TensorBoard]:
    """Do a start's side effects (see the module docstring); returns (archived folder or None, TensorBoard).

    A resume from ``resumed`` (a state of this folder, at ``resumed_iter``) sets the sets and tags saved after
    it aside in ``abandoned_after_<iter>_<stamp>/``."""
    archived: Optional[Path] = None
    set_aside: list[str] = []
    aside = exp_dir / f"abandoned_after_{resumed_iter}_{stamp}"
    tb = TensorBoard(None)
    error: Optional[str] = None
    if is_main:
        try:
            if fresh:
                archived = archive_previous(exp_dir)
                if archived is not None:
                    print(f"hidiff: fresh start of '{options.name}': the previous run folder {exp_dir} was moved "
                          f"to {archived}", flush=True)
            exp_dir.mkdir(parents=True, exist_ok=True)
            lock.claimed(exp_dir)
            store = CheckpointStore(exp_dir)
            store.remove_stale_temp_files()
            if resumed is not None and resumed_iter is not None and _inside(resumed, store.states):
                set_aside = store.set_aside_after(resumed_iter, aside)
            save_resolved(options, exp_dir / "config.yml")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    error = D.broadcast_object(error)
    if error is not None:
        early.discard()
        raise CheckpointError(f"preparing the run folder {exp_dir} failed: {error}")
    try:
        setup_logger(exp_dir / f"train_{options.name}_{stamp}.log" if is_main else None, rank)
    finally:
        early.replay_into_file()
    if set_aside:
        logging.getLogger(LOGGER_NAME).warning(
            "resumed from iteration %d, before the newest checkpoints: the later sets and tags (%s) were moved "
            "to %s, so that this run's own checkpoints are the ones --resume auto, stage 2 and test.py take",
            resumed_iter, ", ".join(set_aside), aside)
    if is_main and options.logger.use_tb_logger:
        tb = TensorBoard(exp_dir / "tb_logger")
    return archived, tb


def options_changed_since(exp_dir: Path, options) -> list[str]:
    """How ``options`` differ (``key: saved -> now``) from those the newest complete checkpoint of ``exp_dir`` was
    trained with, when its config hash differs (a resume would refuse it); [] when they agree or it has none."""
    unit = latest_complete(exp_dir) if (Path(exp_dir) / "training_states").is_dir() else None
    if unit is None or unit.state is None:
        return []
    state = torch.load(unit.state, map_location="cpu", weights_only=True, mmap=True)  # mmap: not the tensors
    if state.get("config_hash") == config_hash(options):
        return []
    return key_differences(state.get("config") or {}, options.to_dict()) or ["(no key differs in the saved dump)"]

