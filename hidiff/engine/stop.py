"""Graceful stop on SIGINT/SIGTERM: finish the current step, save a complete checkpoint, exit.

The first signal only sets a flag (the loop all-reduces it, so under torchrun
every rank stops at the same iteration); the handlers then go back to the
default, so a second signal ends the process at once.
"""
from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        self.signum = signum
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        # os.write: safe inside a signal handler (the logging module takes locks).  The message may have
        # nowhere to go (a pipe whose reader died, which is often why the signal came): the stop must not fail.
        try:
            os.write(2, f"hidiff: {signal.Signals(signum).name} received: finishing this iteration and saving a "
                        f"checkpoint; send it again to exit at once\n".encode())
        except OSError:
            pass
