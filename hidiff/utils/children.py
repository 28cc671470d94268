"""Training children of a long command (``retrain_default``, ``hidiff-sweep``): started so that every way the
command can end leaves each running training stopped cleanly (its iteration finished, its checkpoint saved).

- Each child runs in its own session, so a terminal's Ctrl-C reaches the command alone, and the command
  forwards it to each child exactly once (:class:`ChildSignals`); a second Ctrl-C or SIGTERM, forwarded as
  well, ends the children at once, as it would a training run by hand.
- On Linux each child is sent SIGHUP when the command dies, even by SIGKILL (:func:`start_child`), so no
  training goes on unseen beside a restarted command in the same run folder.  SIGHUP, not SIGTERM: Linux
  sends the parent-death signal once for every thread of the dead command as each exits, and a training
  ignores a repeated SIGHUP, where a second SIGTERM would end it unsaved (hidiff/engine/stop.py).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from typing import Callable, List, Mapping, Optional, Sequence

from hidiff.errors import EXIT_SIGNAL

FORWARDED = (signal.SIGINT, signal.SIGTERM)


class ChildSignals:
    """While entered, SIGINT/SIGTERM to this process are forwarded to the running children (``children``) and
    remembered (``received``: the first signal's name) instead of interrupting this process.

    Each child is told to stop once: by the first signal, by :meth:`stop_running` or by its caller (a child of
    :func:`start_child` remembers a SIGINT/SIGTERM sent to it), whichever comes first; a second stop signal
    ends a training at once, unsaved (hidiff/engine/stop.py).  Only a second signal to this process is
    forwarded to every child, told or not, to end them at once."""

    def __init__(self) -> None:
        self.children: List[subprocess.Popen] = []
        self.received: Optional[str] = None
        self._saved: dict = {}
        self._signals = 0         # SIGINT/SIGTERM received by this process
        self._told: set = set()   # children sent SIGINT/SIGTERM through this object (Popen objects: a pid is reused)

    def __enter__(self) -> "ChildSignals":
        for sig in FORWARDED:
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame) -> None:
        self._signals += 1
        self.received = self.received or signal.Signals(signum).name
        for child in list(self.children):
            if child.poll() is None and (self._signals > 1 or not self._was_told(child)):
                self._tell(child, signum)

    def _was_told(self, child: subprocess.Popen) -> bool:
        return child in self._told or getattr(child, "stop_sent", False)

    def _tell(self, child: subprocess.Popen, signum: int) -> None:
        self._told.add(child)     # first: a signal handled while this one is sent finds the child told
        child.send_signal(signum)

    def stop_running(self) -> None:
        """SIGTERM each running child not yet told to stop (by a forwarded signal, an earlier call or its
        caller), including one started after a signal arrived; a second signal ends a training unsaved."""
        for child in list(self.children):
            if child.poll() is None and not self._was_told(child):
                self._tell(child, signal.SIGTERM)

    def stop_all(self, wait_s: float, log: Callable[[str], None]) -> None:
        """:meth:`stop_running`, then wait up to ``wait_s`` for each child to save and exit; a child still
        running then is killed (and said so)."""
        self.stop_running()
        deadline = time.monotonic() + wait_s
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"a child ({' '.join(map(str, child.args))}) did not stop within {wait_s:.0f} s of SIGTERM: "
                    f"killed; it continues from its previous checkpoint")
                child.kill()
                child.wait()


def _hang_up_with(parent: int) -> Callable[[], None]:
    """Child set-up (Linux): SIGHUP when ``parent`` dies; exit at once if it already has."""

    def setup() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGHUP)    # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:                                          # died before prctl took effect
            os._exit(EXIT_SIGNAL)

    return setup


class _Child(subprocess.Popen):
    """A child that remembers being sent SIGINT or SIGTERM (``stop_sent``), also by its caller directly
    (``retrain_default`` tells a child started after a signal arrived), so :class:`ChildSignals` does not send
    it a second one."""

    stop_sent = False

    def send_signal(self, sig) -> None:
        if sig in FORWARDED:
            self.stop_sent = True
        super().send_signal(sig)


def start_child(cmd: Sequence[str], *, env: Mapping[str, str], **popen) -> subprocess.Popen:
    """``cmd`` in its own session, sent SIGHUP on Linux if this process dies (``popen``: stdout, stderr, ...)."""
    setup = _hang_up_with(os.getpid()) if os.name == "posix" else None
    return _Child(list(cmd), env=dict(env), start_new_session=True, preexec_fn=setup, **popen)
