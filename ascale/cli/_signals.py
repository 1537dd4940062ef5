"""Signals as exceptions, so that cleanup runs: the command line's SIGTERM, and the short
sections that must not be cut in half.

- `terminate_raises` turns SIGTERM (a scheduler's kill, ``kill PID``) into `Terminated`, an
  exception like `KeyboardInterrupt` (not an `Exception`, so no ``except Exception`` swallows
  it): ``finally`` blocks and context managers (`ascale.cli._runfolder.RunFolder`: staging folder,
  lock) run before the process exits with status 143.
- `deferred` holds SIGINT and SIGTERM back while a section runs (moving a run's files in,
  removing a staging folder) and delivers them when it ends.

Python handles signals only in the main thread: elsewhere both are no-ops.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["SIGNALS", "Terminated", "deferred", "terminate_raises"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM arrived (under `terminate_raises`); the exit status is ``128 + signum``."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Inside, SIGTERM raises `Terminated` where the program is; the old handler after."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM are recorded, not acted on; the first one recorded is
    delivered (to the handlers of before) when the section ends."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {s: signal.signal(s, record) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if pending:
            signal.raise_signal(pending[0])
