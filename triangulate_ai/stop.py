"""Ctrl-C as a request: the fit loop asks between steps, so a stop never splits an update."""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """While active, the first SIGINT sets a flag (with an optional note on stderr); a second one
    raises KeyboardInterrupt at once. Outside the main thread, signals cannot be caught: inert."""

    def __init__(self, note: str | None = None) -> None:
        self.note = note
        self.flag = False
        self._previous = None

    def requested(self) -> bool:
        return self.flag

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if self.note:
            print(self.note, file=sys.stderr)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
