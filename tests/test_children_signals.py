"""hidiff/utils/children.py: each child is told to stop exactly once, whoever tells it (a signal to the command,
``stop_running``, the caller); only a second signal to the command ends the children at once.

The children are small Python processes with hidiff's own StopRequest (a training's signal handling): the first
SIGINT/SIGTERM asks for a stop, a second one ends the process at once.  Each child writes ``ready`` once its
handlers are installed and ``stopping`` once it took the first signal, then "saves" (writes ``saved``, exits 0)
when the test creates its ``release`` file: the test decides when the save ends, so it waits on files, not on
sleeps.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import run_env
from hidiff.utils.children import ChildSignals, start_child

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

WAIT_S = 120   # generous: a long training shares the machine's two cores

TRAINING = """
import sys, time
from pathlib import Path
from hidiff.engine.stop import StopRequest

folder = Path(sys.argv[1])
stop = StopRequest()
stop.install()
(folder / "ready").write_text("")
deadline = time.monotonic() + {wait}
while not stop.requested:
    if time.monotonic() > deadline:
        sys.exit(3)                     # never told to stop
    time.sleep(0.02)
(folder / "stopping").write_text(stop.name)
while not (folder / "release").exists():   # the checkpoint is being saved: a second signal ends it unsaved
    if time.monotonic() > deadline:
        sys.exit(5)
    time.sleep(0.02)
(folder / "saved").write_text(stop.name)
""".format(wait=WAIT_S)


def _wait_for(path: Path, child) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert child.poll() is None, f"the child ended ({child.returncode}) before writing {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} after {WAIT_S} s"
        time.sleep(0.02)


def _start(signals: ChildSignals, folder: Path):
    """A training child in ``folder``, handlers installed; listed in ``signals.children`` as the callers do."""
    folder.mkdir()
    child = start_child([sys.executable, "-c", TRAINING, str(folder)], env=run_env())
    signals.children.append(child)
    _wait_for(folder / "ready", child)
    return child


def _signal_self(signum: int) -> None:
    """As if from the terminal; ChildSignals' handler runs before this returns (main thread, next bytecode)."""
    os.kill(os.getpid(), signum)
    time.sleep(0.01)


def _saved(child, folder: Path) -> str:
    (folder / "release").write_text("")
    code = child.wait(timeout=WAIT_S)
    assert code == 0, f"exit {code}: the child was ended before it saved"
    return (folder / "saved").read_text()


def _reap(children) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_first_ctrl_c_after_stop_running_does_not_end_a_stopping_child(tmp_path):
    """A failed job made the command SIGTERM the others; the user's first Ctrl-C while they save must not
    reach them (it would end them unsaved); stop_running again does not either."""
    with ChildSignals() as signals:
        child = _start(signals, tmp_path / "a")
        try:
            signals.stop_running()
            _wait_for(tmp_path / "a" / "stopping", child)
            signals.stop_running()
            _signal_self(signal.SIGINT)
            assert signals.received == "SIGINT"
            assert _saved(child, tmp_path / "a") == "SIGTERM"
        finally:
            _reap([child])


def test_a_second_signal_ends_every_child_at_once_told_or_not(tmp_path):
    """First Ctrl-C: forwarded only to the child not told yet; second: to both, which end at once, unsaved."""
    with ChildSignals() as signals:
        told = _start(signals, tmp_path / "told")
        try:
            signals.stop_running()
            _wait_for(tmp_path / "told" / "stopping", told)
            untold = _start(signals, tmp_path / "untold")
            try:
                _signal_self(signal.SIGINT)
                _wait_for(tmp_path / "untold" / "stopping", untold)
                assert (tmp_path / "untold" / "stopping").read_text() == "SIGINT"
                assert told.poll() is None
                _signal_self(signal.SIGINT)
                assert told.wait(timeout=WAIT_S) == -signal.SIGINT
                assert untold.wait(timeout=WAIT_S) == -signal.SIGINT
                assert not (tmp_path / "told" / "saved").exists() and not (tmp_path / "untold" / "saved").exists()
            finally:
                _reap([untold])
        finally:
            _reap([told])


def test_a_child_started_after_a_signal_is_stopped_by_stop_all(tmp_path):
    """A signal arrived with no child running; a child started then is sent SIGTERM by stop_all and saves,
    not killed after the wait as if it had ignored a SIGTERM it was never sent."""
    messages: list = []
    with ChildSignals() as signals:
        _signal_self(signal.SIGTERM)
        assert signals.received == "SIGTERM"
        child = _start(signals, tmp_path / "late")
        try:
            (tmp_path / "late" / "release").write_text("")   # saves as soon as it is told
            signals.stop_all(WAIT_S, messages.append)
            assert child.returncode == 0 and messages == [], (child.returncode, messages)
            assert (tmp_path / "late" / "saved").read_text() == "SIGTERM"
        finally:
            _reap([child])


def test_a_child_its_caller_told_is_not_told_again(tmp_path):
    """retrain_default SIGTERMs a child started as a signal arrived; a later stop_running (another child
    failed) must not send it a second SIGTERM."""
    with ChildSignals() as signals:
        _signal_self(signal.SIGINT)
        child = _start(signals, tmp_path / "c")
        try:
            child.send_signal(signal.SIGTERM)
            _wait_for(tmp_path / "c" / "stopping", child)
            signals.stop_running()
            assert _saved(child, tmp_path / "c") == "SIGTERM"
        finally:
            _reap([child])
