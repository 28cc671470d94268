"""Graceful stop on SIGINT/SIGTERM/SIGHUP: finish the current step, save a complete checkpoint, exit.

The first signal only sets a flag (the loop all-reduces it, so under torchrun
every rank stops at the same iteration); SIGINT and SIGTERM then go back to the
default, so one of them after it ends the process at once.  A repeated SIGHUP
(the terminal closed, or the command that started this training died:
``retrain_default`` asks for it as the parent-death signal) is ignored: Linux
sends the parent-death signal once per thread of the dead parent, so several
arrive for one event (README.md, "Stopping is safe").
"""
from __future__ import annotations

import os
import signal
import threading

ESCALATING = (signal.SIGINT, signal.SIGTERM)
HANGUP = tuple(s for s in (getattr(signal, "SIGHUP", None),) if s is not None)   # no SIGHUP on Windows
STOP_SIGNALS = ESCALATING + HANGUP


class StopRequest:
    """Installs the handlers (main thread only) and remembers the first signal received."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            return   # only a repeat of SIGHUP gets here (one per thread of a dead parent): already stopping
        self.signum = signum
        for s in ESCALATING:
            signal.signal(s, signal.SIG_DFL)
        again = "Ctrl-C or SIGTERM exits at once" if signum in HANGUP else "send it again to exit at once"
        # os.write: safe inside a signal handler (the logging module takes locks).  The message may have
        # nowhere to go (a pipe whose reader died, which is often why the signal came): the stop must not fail.
        try:
            os.write(2, f"hidiff: {signal.Signals(signum).name} received: finishing this iteration and saving a "
                        f"checkpoint; {again}\n".encode())
        except OSError:
            pass
