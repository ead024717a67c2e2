"""Ctrl-C and SIGTERM as a request to stop cleanly: checkpoint first, then exit."""

from __future__ import annotations

import os
import signal
import sys
import threading


class StopRequest:
    """Within `with StopRequest() as stop:`, the first SIGINT or SIGTERM sets `stop.signum`;
    the loop then saves a checkpoint and leaves. A second signal exits at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)  # checkpoints are written atomically, so this loses no file
        self.signum = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then "
            "stopping (press Ctrl-C again to quit at once)\n"
        )
