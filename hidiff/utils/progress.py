"""One progress bar for every long command: tqdm with an ETA on stderr, silent when stderr is not a terminal."""
from __future__ import annotations

import sys
from typing import Any, Optional


class Progress:
    """A tqdm bar over ``total`` steps, drawn only when ``enabled`` and stderr is a terminal (as tqdm does).

    ``redraw_each``: draw on every step (for slow steps such as one image, where tqdm's 0.1 s redraw
    interval would otherwise skip updates that a reader waits for).
    """

    def __init__(self, total: Optional[int], *, desc: Optional[str] = None, unit: str = "it", initial: int = 0,
                 enabled: bool = True, leave: bool = True, redraw_each: bool = False) -> None:
        self.bar = None
        if enabled and sys.stderr is not None and sys.stderr.isatty():
            from tqdm import tqdm  # deferred: only a terminal draws a bar
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                            mininterval=0 if redraw_each else 0.1, file=sys.stderr)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
