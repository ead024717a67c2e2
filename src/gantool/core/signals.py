"""Ctrl-C and SIGTERM as a request to stop cleanly: checkpoint first, then exit."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator


class Stopped(KeyboardInterrupt):
    """SIGTERM outside the training loop, raised as Ctrl-C's KeyboardInterrupt is, so that
    start-up and the end of a run stop the same way for both: one line and a summary."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Stopped (SIGINT raises KeyboardInterrupt already)."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return

    def stop(signum: int, frame) -> None:
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
